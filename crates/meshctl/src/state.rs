//! `state.json`: what `up` started (pids, ports, paths, restarts), for `status`, `demo` and
//! `down`. The supervisor rewrites it whenever it restarts a service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;

use crate::error::{IoContext as _, MeshError, Result};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// Everything a running mesh consists of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshState {
    /// When `up` finished starting, RFC 3339 UTC.
    pub started_at: String,
    /// The `meshctl up` process supervising the mesh, when it runs in the foreground.
    pub supervisor_pid: Option<u32>,
    /// The database server.
    pub postgres: PostgresState,
    /// The message broker.
    pub nats: NatsState,
    /// The services, in start order.
    pub services: Vec<ServiceState>,
    /// The developer certificate meshctl calls the services with; `None` when the mesh runs
    /// plaintext (`up --plaintext`).
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// meshctl's trace receiver (OTLP/gRPC and `GET /trace`); `None` without traces.
    #[serde(default)]
    pub traces: Option<SocketAddr>,
}

/// A channel to a service of the mesh, with the caller's user token when it has one.
pub type MeshChannel = InterceptedService<tonic::transport::Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call (nothing for the developer's own calls).
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A client certificate, its key and the CA the services' certificates chain to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTls {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// The CA.
    pub ca: PathBuf,
}

/// The PostgreSQL server of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresState {
    /// The postmaster's pid.
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Directory holding `pg_ctl`.
    pub bin_dir: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
}

/// The nats-server of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatsState {
    /// Its pid.
    pub pid: u32,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// The binary (to recognise the pid as ours).
    pub binary: PathBuf,
}

/// One running service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    /// Its name (package and binary).
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Its gRPC listener.
    pub grpc_addr: SocketAddr,
    /// Its admin HTTP listener.
    pub admin_addr: SocketAddr,
    /// The binary (to recognise the pid as ours).
    pub binary: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// How often the supervisor started it again after it exited on its own.
    #[serde(default)]
    pub restarts: u32,
}

impl MeshState {
    /// The service called `name`, if the mesh runs it.
    #[must_use]
    pub fn service(&self, name: &str) -> Option<&ServiceState> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Reads `dir/state.json`; `None` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).context(|| format!("read {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| MeshError::State {
                path,
                detail: err.to_string(),
            })
    }

    /// The mesh recorded in `dir`; [`MeshError::NotRunning`] when there is none.
    pub fn running(dir: &Path) -> Result<Self> {
        Self::load(dir)?.ok_or_else(|| MeshError::NotRunning(dir.join(STATE_FILE)))
    }

    /// A lazily connecting channel to the gRPC port of service `name` (mutual TLS with the
    /// developer certificate when the mesh runs with TLS), calling as the developer.
    pub fn channel(&self, name: &'static str) -> Result<MeshChannel> {
        let service = self.service(name).ok_or(MeshError::MissingService(name))?;
        Ok(InterceptedService::new(
            self.channel_to(service)?,
            Bearer(None),
        ))
    }

    /// Like [`Self::channel`], each call bearing the user token `token` (what an end user's
    /// calls carry: orders and notifications admit users by their token).
    pub fn user_channel(&self, name: &'static str, token: &str) -> Result<MeshChannel> {
        let service = self.service(name).ok_or(MeshError::MissingService(name))?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| MeshError::Tls("the access token is not a valid header value".into()))?;
        Ok(InterceptedService::new(
            self.channel_to(service)?,
            Bearer(Some(value)),
        ))
    }

    /// A lazily connecting channel to `service`'s gRPC port.
    pub fn channel_to(&self, service: &ServiceState) -> Result<tonic::transport::Channel> {
        let connector = match &self.tls {
            None => None,
            Some(tls) => {
                let material = shop_tls::MeshTls::load(shop_tls::TlsFiles {
                    cert: tls.cert.clone(),
                    key: tls.key.clone(),
                    ca: tls.ca.clone(),
                })?;
                let expected =
                    material
                        .identity()
                        .with_service(&service.name)
                        .ok_or_else(|| {
                            MeshError::Tls(format!("{:?} is not a service name", service.name))
                        })?;
                Some(shop_tls::MtlsConnector::new(material, expected))
            }
        };
        crate::probe::channel(service.grpc_addr, connector)
    }

    /// Writes `dir/state.json` atomically (a temp file renamed over it).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|err| MeshError::State {
            path: path.clone(),
            detail: err.to_string(),
        })?;
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, text + "\n").context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).context(|| format!("replace {}", path.display()))
    }

    /// Deletes `dir/state.json` if it exists.
    pub fn remove(dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).context(|| format!("remove {}", path.display()))
            }
            _ => Ok(()),
        }
    }
}

/// Now as RFC 3339 UTC with second precision, e.g. `2025-01-31T12:00:00Z`.
#[must_use]
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::loopback;

    fn sample() -> MeshState {
        MeshState {
            started_at: now_rfc3339(),
            supervisor_pid: None,
            postgres: PostgresState {
                pid: 10,
                port: 55432,
                bin_dir: "/usr/lib/postgresql/15/bin".into(),
                data_dir: "/x/.mesh/postgres".into(),
            },
            nats: NatsState {
                pid: 11,
                port: 54222,
                binary: "/x/.venv/bin/nats-server".into(),
            },
            services: vec![ServiceState {
                name: "identity".into(),
                pid: 12,
                grpc_addr: loopback(50051),
                admin_addr: loopback(9101),
                binary: "/x/target/debug/identity".into(),
                log: "/x/.mesh/logs/identity.log".into(),
                restarts: 2,
            }],
            tls: None,
            traces: None,
        }
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(MeshState::load(dir.path()).unwrap(), None);
        let state = sample();
        state.save(dir.path()).unwrap();
        assert_eq!(MeshState::load(dir.path()).unwrap(), Some(state.clone()));
        assert_eq!(state.service("identity").unwrap().pid, 12);
        assert!(state.service("orders").is_none());
        MeshState::remove(dir.path()).unwrap();
        MeshState::remove(dir.path()).unwrap();
        assert_eq!(MeshState::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), "{not json").unwrap();
        let err = MeshState::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
    }

    #[test]
    fn timestamps_look_like_rfc3339() {
        let ts = now_rfc3339();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }
}
