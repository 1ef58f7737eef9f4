//! The gRPC server every service runs on.
//!
//! [`GrpcServerBuilder`] collects the service's tonic services and readiness checks, then
//! [`GrpcServerBuilder::bind`] opens the gRPC and admin listeners (port 0 works: tests read the
//! real address back) and [`GrpcServer::run_until`] serves until a shutdown future resolves.
//!
//! Every server gets, without the service asking: grpc.health.v1 following readiness, server
//! reflection v1 and v1alpha over the whole descriptor set, the admin HTTP port, and this layer
//! stack, outermost first:
//!
//! 1. [`RequestIdLayer`]: first, so every log line and metric below can name the call.
//!    Under `PEER_IDENTITY=linkerd`, then [`LinkerdPeerLayer`]: the caller's identity from
//!    Linkerd's proxy into the request's peer, for everything below ([`crate::sidecar`]).
//! 2. [`ObserveLayer`]: span + metrics around everything the call costs, so shed and
//!    rate-limited calls show in the metrics too; labelled by the methods this server serves
//!    (read from the descriptor sets), every other path as `unknown`.
//! 3. [`AuthorizeLayer`]: the method's policy from the contracts against the caller's verified
//!    identity (see [`crate::authz`]), before the call costs a rate-limit token or a slot.
//! 4. `shop_resilience::server::ServerLayer`: the caller's deadline (`grpc-timeout`) becomes
//!    `shop_resilience::deadline::current()` for the handler and the calls it makes; then the
//!    per-caller rate limit (GCRA), so a noisy caller is refused before it takes a concurrency
//!    slot; then load shedding over a global concurrency limit, answering RESOURCE_EXHAUSTED
//!    at once instead of queueing without bound.
//! 5. [`ValidationLayer`]: last before the handler, so no handler sees a request that breaks
//!    the contract's `buf.validate` rules, and only admitted calls pay for decoding.
//!
//! With `TLS_CERT_FILE`/`TLS_KEY_FILE`/`TLS_CA_FILE` set the listener speaks mutual TLS
//! (`shop_tls`), the files are re-read every second (rotation without a restart), and every
//! request carries the caller's verified service identity ([`crate::peer`]); clients built with
//! [`GrpcServerBuilder::connect`] present the same certificate and check the server's.
//!
//! tonic itself enforces the incoming deadline (`grpc-timeout`, bounded by the configured
//! default deadline), the per-connection stream limit and message size limits.
//!
//! Shutdown: health flips to NOT_SERVING at once, the listener stays open for the drain delay
//! (so load balancers notice), then closes; in-flight calls get the grace period to finish.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
};

use crate::{
    RuntimeError, admin,
    authz::{AuthorizeLayer, PolicyTable},
    client::{DependencyConfig, ResilientChannel},
    config::ServerConfig,
    metrics::Metrics,
    observe::{KnownMethods, ObserveLayer},
    readiness::{CheckRole, Readiness, ReadinessCheck},
    request_id::RequestIdLayer,
    validation::{RequestValidator, ValidationLayer},
};
use shop_proto::identity::identity_service_client::IdentityServiceClient;
use shop_tls::{MeshTls, MtlsConnector, ServiceIdentity};

use crate::{
    config::PeerIdentitySource,
    sidecar::{LinkerdNames, LinkerdPeerLayer},
};

use crate::user_tokens::UserTokens;

/// Collects what a service serves before the listeners open.
pub struct GrpcServerBuilder {
    config: ServerConfig,
    descriptor_set: &'static [u8],
    routes: RoutesBuilder,
    service_names: Vec<String>,
    checks: Vec<(Arc<dyn ReadinessCheck>, CheckRole)>,
    metrics: Metrics,
    stopping: CancellationToken,
    admin_routes: axum::Router,
    /// The TLS material, once loaded (shared by the listener and the clients).
    tls: Mutex<Option<MeshTls>>,
}

/// How often certificate files are checked for a rotation.
const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for GrpcServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServerBuilder")
            .field("services", &self.service_names)
            .finish_non_exhaustive()
    }
}

impl GrpcServerBuilder {
    /// A server for the contracts in `descriptor_set` (usually `shop_proto::FILE_DESCRIPTOR_SET`).
    #[must_use]
    pub fn new(config: ServerConfig, descriptor_set: &'static [u8]) -> Self {
        Self {
            config,
            descriptor_set,
            routes: RoutesBuilder::default(),
            service_names: Vec::new(),
            checks: Vec::new(),
            metrics: Metrics::new(),
            stopping: CancellationToken::new(),
            admin_routes: axum::Router::new(),
            tls: Mutex::new(None),
        }
    }

    /// The service's TLS material when TLS is configured (loaded on first use).
    pub fn tls(&self) -> Result<Option<MeshTls>, RuntimeError> {
        let Some(files) = self.config.tls.files()? else {
            return Ok(None);
        };
        let mut cached = self.tls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tls) = cached.as_ref() {
            return Ok(Some(tls.clone()));
        }
        let tls = MeshTls::load(files)?;
        tracing::info!(identity = %tls.identity(), "mutual TLS on");
        *cached = Some(tls.clone());
        Ok(Some(tls))
    }

    /// The verifier of user tokens, with identity's keys when `IDENTITY_URL` is set.
    async fn user_tokens(&self, tls: Option<&MeshTls>) -> Result<UserTokens, RuntimeError> {
        let settings = &self.config.user_tokens;
        let identity = match &settings.identity_url {
            None => None,
            Some(url) => {
                let caller = tls.map_or_else(
                    || "shop".to_owned(),
                    |tls| tls.identity().service().to_owned(),
                );
                let dependency = crate::client::dependency("identity", &caller, url)
                    .map_err(|err| RuntimeError::Config(err.to_string()))?;
                Some(IdentityServiceClient::new(self.connect(&dependency).await?))
            }
        };
        Ok(UserTokens::new(
            identity,
            settings.jwt_issuer.clone(),
            settings.jwt_audience.clone(),
        ))
    }

    /// A resilient client of the dependency `config` describes (see [`crate::client`]), its
    /// breaker reported in this server's metrics. With TLS configured the connections are
    /// mutual TLS: this service's certificate, and the server must present the identity of
    /// the service `config.name` in this service's trust domain and namespace.
    pub async fn connect(
        &self,
        config: &DependencyConfig,
    ) -> Result<ResilientChannel, RuntimeError> {
        let mut config = config.clone();
        if let (Some(tls), None) = (self.tls()?, &config.endpoint.tls) {
            let expected = tls.identity().with_service(&config.name).ok_or_else(|| {
                RuntimeError::Config(format!(
                    "dependency {:?} is not a service name a certificate can carry",
                    config.name
                ))
            })?;
            config.endpoint.tls = Some(MtlsConnector::new(tls, expected));
        }
        Ok(crate::client::connect(&config, &self.metrics).await?)
    }

    /// Serves `routes` on the admin HTTP server beside `/livez`, `/readyz` and `/metrics`:
    /// operator endpoints (`/admin/...`) that read the service's own state for tools such as
    /// `meshctl check`. The admin port is not exposed outside the cluster.
    #[must_use]
    pub fn admin_routes(mut self, routes: axum::Router) -> Self {
        self.admin_routes = self.admin_routes.merge(routes);
        self
    }

    /// Serves `service`; its name gets its own grpc.health.v1 entry.
    #[must_use]
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower_service::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME.to_owned());
        self.routes.add_service(service);
        self
    }

    /// A dependency the RPCs cannot work without: while it fails, health is NOT_SERVING.
    #[must_use]
    pub fn readiness_check(self, check: impl ReadinessCheck) -> Self {
        self.dependency_check(check, CheckRole::Gates)
    }

    /// A dependency the service keeps serving without (e.g. NATS behind an outbox): its
    /// state shows in `/readyz` detail and `shop_dependency_up`, never in health.
    #[must_use]
    pub fn reported_check(self, check: impl ReadinessCheck) -> Self {
        self.dependency_check(check, CheckRole::Reports)
    }

    /// A dependency with the given role (see [`CheckRole`]).
    #[must_use]
    pub fn dependency_check(mut self, check: impl ReadinessCheck, role: CheckRole) -> Self {
        self.checks.push((Arc::new(check), role));
        self
    }

    /// The metrics registry, for a service to add its own metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cancelled when the listener closes: long-lived streams should end on it so the
    /// grace period is not spent waiting for them.
    #[must_use]
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Validates the config and opens both listeners.
    pub async fn bind(self) -> Result<GrpcServer, RuntimeError> {
        self.config.validate()?;
        let validator = RequestValidator::from_descriptor_set(
            self.descriptor_set,
            self.config.max_message_bytes,
        )?;
        let methods = known_methods(self.descriptor_set, &self.service_names)?;
        let policies = PolicyTable::new(self.descriptor_set, &self.service_names)?;
        let tls = self.tls()?;
        let (own_identity, sidecar) = peer_identity(&self.config, tls.as_ref())?;
        let user_tokens = self.user_tokens(tls.as_ref()).await?;
        if own_identity.is_none() {
            tracing::warn!(
                "plaintext gRPC: every RPC has a policy, but without peer certificates none is \
                 enforced; set TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE"
            );
        }
        let grpc_listener = bind(self.config.grpc_addr).await?;
        let admin_listener = bind(self.config.admin_addr).await?;
        let grpc_addr = local_addr(&grpc_listener)?;
        let admin_addr = local_addr(&admin_listener)?;

        let (reporter, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = reflection(self.descriptor_set, &self.service_names)
            .build_v1()
            .map_err(|err| RuntimeError::Descriptor(err.to_string()))?;
        let reflection_v1alpha = reflection(self.descriptor_set, &self.service_names)
            .build_v1alpha()
            .map_err(|err| RuntimeError::Descriptor(err.to_string()))?;

        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let readiness = Arc::new(Readiness::new(
            self.checks,
            reporter,
            self.service_names,
            &self.metrics,
        ));
        // NOT_SERVING until the first round of checks has passed.
        readiness
            .refresh(
                self.config
                    .readiness_interval()
                    .max(std::time::Duration::from_secs(1)),
            )
            .await;

        tracing::info!(%grpc_addr, %admin_addr, tls = tls.is_some(), "listening");
        Ok(GrpcServer {
            tls,
            own_identity,
            sidecar,
            policies,
            user_tokens,
            config: self.config,
            grpc_listener,
            admin_listener,
            grpc_addr,
            admin_addr,
            routes: routes.routes(),
            readiness,
            validator,
            methods,
            metrics: self.metrics,
            stopping: self.stopping,
            admin_routes: self.admin_routes,
        })
    }
}

/// This server's own identity and, under a sidecar mesh, the layer that reads callers'.
fn peer_identity(
    config: &ServerConfig,
    tls: Option<&MeshTls>,
) -> Result<(Option<ServiceIdentity>, Option<LinkerdPeerLayer>), RuntimeError> {
    let settings = &config.peer_identity;
    match settings.peer_identity {
        PeerIdentitySource::Tls => Ok((tls.map(MeshTls::identity), None)),
        PeerIdentitySource::Linkerd => {
            if tls.is_some() {
                return Err(RuntimeError::Config(
                    "PEER_IDENTITY=linkerd takes callers' identities from Linkerd's proxy, which \
                     does the mutual TLS: unset TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE"
                        .into(),
                ));
            }
            let names = LinkerdNames::new(&settings.linkerd_identity_suffix)
                .map_err(|err| RuntimeError::Config(format!("LINKERD_IDENTITY_SUFFIX: {err}")))?;
            let (Some(account), Some(namespace)) =
                (&settings.service_account, &settings.pod_namespace)
            else {
                return Err(RuntimeError::Config(
                    "PEER_IDENTITY=linkerd needs SERVICE_ACCOUNT and POD_NAMESPACE (the \
                     workload's own name in the mesh, from the downward API)"
                        .into(),
                ));
            };
            let own = names.workload(namespace, account).map_err(|err| {
                RuntimeError::Config(format!("SERVICE_ACCOUNT/POD_NAMESPACE: {err}"))
            })?;
            tracing::info!(identity = %own, "peer identities from Linkerd's l5d-client-id");
            Ok((Some(own), Some(LinkerdPeerLayer::new(names))))
        }
    }
}

/// The services every server answers besides the service's own.
const STANDARD_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Every method this server answers, for bounded metric labels.
fn known_methods(
    descriptor_set: &[u8],
    service_names: &[String],
) -> Result<KnownMethods, RuntimeError> {
    let services: Vec<&str> = service_names
        .iter()
        .map(String::as_str)
        .chain(STANDARD_SERVICES)
        .collect();
    KnownMethods::new(
        &[
            descriptor_set,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ],
        &services,
    )
    .map_err(|err| RuntimeError::Descriptor(err.to_string()))
}

/// Reflection over every contract (so clients resolve any type), advertising only the
/// services this server actually serves.
fn reflection<'a>(
    descriptor_set: &'a [u8],
    service_names: &[String],
) -> tonic_reflection::server::Builder<'a> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor_set)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    STANDARD_SERVICES
        .iter()
        .map(|name| (*name).to_owned())
        .chain(service_names.iter().cloned())
        .fold(builder, |builder, name| builder.with_service_name(name))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, RuntimeError> {
    listener.local_addr().map_err(|source| RuntimeError::Io {
        context: "reading the bound address",
        source,
    })
}

/// A bound server, ready to run.
pub struct GrpcServer {
    tls: Option<MeshTls>,
    /// Who this server is, when it can tell its callers apart (mutual TLS or a sidecar mesh).
    own_identity: Option<ServiceIdentity>,
    /// Under a sidecar mesh: the layer that reads its callers' identities.
    sidecar: Option<LinkerdPeerLayer>,
    policies: PolicyTable,
    user_tokens: UserTokens,
    config: ServerConfig,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    routes: Routes,
    readiness: Arc<Readiness>,
    validator: RequestValidator,
    methods: KnownMethods,
    metrics: Metrics,
    stopping: CancellationToken,
    admin_routes: axum::Router,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Where gRPC is served.
    #[must_use]
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Where the admin HTTP server listens.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The service's readiness, as health and `/readyz` report it.
    #[must_use]
    pub fn readiness(&self) -> Arc<Readiness> {
        Arc::clone(&self.readiness)
    }

    /// Like [`Self::run_until`], with background tasks (relays, consumers) that run while the
    /// server does: once it has drained, `stop` is cancelled and every task is awaited, so
    /// they finish what they hold before the process exits.
    pub async fn run_with_background(
        self,
        shutdown: impl Future<Output = ()> + Send,
        stop: CancellationToken,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    ) -> Result<(), RuntimeError> {
        let result = self.run_until(shutdown).await;
        stop.cancel();
        for task in tasks {
            if let Err(err) = task.await {
                tracing::warn!(error = %err, "background task failed");
            }
        }
        result
    }

    /// Serves until `shutdown` resolves, then drains as described in the module docs.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RuntimeError> {
        let background = CancellationToken::new();
        let readiness_task = tokio::spawn(
            Arc::clone(&self.readiness).run(self.config.readiness_interval(), background.clone()),
        );
        let tls_watch = self
            .tls
            .as_ref()
            .map(|tls| tls.watch(TLS_RELOAD_INTERVAL, background.clone()));
        let admin = admin::router(Arc::clone(&self.readiness), self.metrics.clone())
            .merge(self.admin_routes);
        let admin_stop = background.clone();
        let admin_task = tokio::spawn(async move {
            axum::serve(self.admin_listener, admin)
                .with_graceful_shutdown(admin_stop.cancelled_owned())
                .await
        });

        let layers = tower::ServiceBuilder::new()
            .layer(RequestIdLayer)
            .option_layer(self.sidecar.clone())
            .layer(ObserveLayer::new(
                self.metrics.clone(),
                self.methods.clone(),
            ))
            .layer(AuthorizeLayer::new(
                self.policies.clone(),
                self.own_identity.clone(),
                self.user_tokens.clone(),
            ))
            .layer(shop_resilience::server::ServerLayer::new(
                &self.config.protection(),
            ))
            .layer(ValidationLayer::new(self.validator.clone()));

        let readiness = Arc::clone(&self.readiness);
        let drain = self.config.drain_delay();
        let stopping = self.stopping.clone();
        let close_listener = async move {
            shutdown.await;
            readiness.begin_shutdown().await;
            tracing::info!(?drain, "NOT_SERVING; draining before the listener closes");
            tokio::time::sleep(drain).await;
            stopping.cancel();
        };

        let serve = tonic::transport::Server::builder()
            .timeout(self.config.default_deadline())
            .max_concurrent_streams(self.config.max_concurrent_streams)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .layer(layers)
            .serve_with_incoming_shutdown(
                self.routes,
                // TLS handshakes (when configured) and TCP_NODELAY happen in shop_tls.
                shop_tls::incoming(self.grpc_listener, self.tls),
                close_listener,
            );
        tokio::pin!(serve);
        let grace = self.config.grace_period();
        let result = tokio::select! {
            result = &mut serve => result.map_err(RuntimeError::Serve),
            () = async { self.stopping.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "grace period over; abandoning calls still in flight");
                Ok(())
            }
        };
        background.cancel();
        let _ = readiness_task.await;
        if let Some(task) = tls_watch {
            let _ = task.await;
        }
        match admin_task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "admin server stopped with an error"),
            Err(err) => tracing::warn!(error = %err, "admin server task failed"),
        }
        tracing::info!("stopped");
        result
    }
}
