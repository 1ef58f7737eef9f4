//! The policies in the contracts, enforced over real mutual-TLS handshakes: the processor's
//! money-moving RPCs are for payments only, its admin RPCs for the developer's certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::SocketAddr;

use payment_processor::{App, BehaviorConfig, Config};
use shop_proto::{
    common::Money,
    processor::{
        AuthorizeRequest, GetBehaviorRequest,
        payment_processor_service_client::PaymentProcessorServiceClient,
        processor_admin_service_client::ProcessorAdminServiceClient,
    },
};
use shop_runtime::{LogFormat, ServerConfig, TelemetryConfig, TlsConfig};
use shop_testkit::TestPki;
use tonic::{Code, transport::Channel};

struct Processor {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), shop_runtime::RuntimeError>>,
}

async fn start(pki: &TestPki) -> Processor {
    let mut server = ServerConfig::ephemeral();
    server.tls = TlsConfig::from_files(&pki.issue("payment-processor").unwrap());
    let app = App::build(Config {
        server,
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
        behavior: BehaviorConfig::default(),
    })
    .await
    .unwrap();
    let addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    Processor { addr, stop, task }
}

impl Processor {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn channel_as(pki: &TestPki, caller: &str, addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector_lazy(pki.connector(caller, "payment-processor").unwrap())
}

/// A TLS channel that trusts the CA and presents no certificate.
fn anonymous(pki: &TestPki, addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector_lazy(pki.anonymous_connector().unwrap())
}

fn authorize() -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: "k1".into(),
        amount: Some(Money {
            units: 10,
            nanos: 0,
            currency_code: "EUR".into(),
        }),
        card_token: "tok_visa".into(),
    }
}

async fn authorize_as(channel: Channel) -> Code {
    match PaymentProcessorServiceClient::new(channel)
        .authorize(authorize())
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn only_the_callers_a_policy_lists_get_through() {
    let pki = TestPki::new().unwrap();
    let processor = start(&pki).await;
    let addr = processor.addr;

    // Authorize: `callers: ["payments"]`.
    assert_eq!(
        authorize_as(channel_as(&pki, "payments", addr)).await,
        Code::Ok
    );
    assert_eq!(
        authorize_as(channel_as(&pki, "orders", addr)).await,
        Code::PermissionDenied
    );
    assert_eq!(
        authorize_as(anonymous(&pki, addr)).await,
        Code::Unauthenticated
    );

    // The admin RPCs: the developer's certificate, not payments'.
    let admin = |channel| async move {
        match ProcessorAdminServiceClient::new(channel)
            .get_behavior(GetBehaviorRequest {})
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    };
    assert_eq!(admin(channel_as(&pki, "developer", addr)).await, Code::Ok);
    assert_eq!(
        admin(channel_as(&pki, "payments", addr)).await,
        Code::PermissionDenied
    );

    // Health is public: probes carry no certificate.
    let health = tonic_health::pb::health_client::HealthClient::new(anonymous(&pki, addr))
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    // A certificate from another CA does not get as far as a policy.
    let other = TestPki::new().unwrap();
    let files = other.issue("payments").unwrap();
    std::fs::write(
        &files.ca,
        format!("{}{}", other.ca().cert_pem(), pki.ca().cert_pem()),
    )
    .unwrap();
    let intruder = shop_tls::MeshTls::load(files).unwrap();
    let expected = intruder
        .identity()
        .with_service("payment-processor")
        .unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector_lazy(shop_tls::MtlsConnector::new(intruder, expected));
    let code = authorize_as(channel).await;
    assert!(
        matches!(code, Code::Unavailable | Code::Unknown),
        "refused at the handshake, got {code:?}"
    );
    processor.stop().await;
}

/// A processor under Linkerd: our TLS off, callers named by the `l5d-client-id` header its
/// proxy sets (and removes for an unmeshed client). The header is written here as the proxy
/// would; the policies must hold exactly as with certificates.
#[tokio::test]
async fn under_linkerd_the_proxys_client_id_is_the_caller_and_policies_still_hold() {
    let mut server = ServerConfig::ephemeral();
    server.peer_identity.peer_identity = shop_runtime::PeerIdentitySource::Linkerd;
    server.peer_identity.service_account = Some("payment-processor".into());
    server.peer_identity.pod_namespace = Some("shop".into());
    let app = App::build(Config {
        server,
        telemetry: TelemetryConfig {
            log_format: LogFormat::Text,
        },
        behavior: BehaviorConfig::default(),
    })
    .await
    .unwrap();
    let addr = app.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let processor = Processor { addr, stop, task };
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let call_as = |client_id: Option<&'static str>| {
        let channel = channel.clone();
        async move {
            let mut request = tonic::Request::new(authorize());
            if let Some(id) = client_id {
                request
                    .metadata_mut()
                    .insert("l5d-client-id", id.parse().unwrap());
            }
            match PaymentProcessorServiceClient::new(channel)
                .authorize(request)
                .await
            {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
    };
    let mesh = "serviceaccount.identity.linkerd.cluster.local";
    assert_eq!(
        call_as(Some(
            "payments.shop.serviceaccount.identity.linkerd.cluster.local"
        ))
        .await,
        Code::Ok,
        "payments, as its proxy names it"
    );
    assert_eq!(
        call_as(Some(
            "orders.shop.serviceaccount.identity.linkerd.cluster.local"
        ))
        .await,
        Code::PermissionDenied
    );
    assert_eq!(
        call_as(Some(
            "payments.staging.serviceaccount.identity.linkerd.cluster.local"
        ))
        .await,
        Code::Unauthenticated,
        "another namespace's payments is not one of ours, as with certificates"
    );
    assert_eq!(call_as(None).await, Code::Unauthenticated, "unmeshed");
    for foreign in [
        "payments.shop.serviceaccount.identity.other.cluster.local",
        "payments",
        "spiffe://shop.local/ns/shop/sa/payments",
    ] {
        assert_eq!(
            call_as(Some(foreign)).await,
            Code::Unauthenticated,
            "{foreign} is not one of {mesh}'s names"
        );
    }
    processor.stop().await;
}

#[tokio::test]
async fn linkerd_mode_refuses_to_start_beside_our_own_tls_or_without_its_name() {
    let pki = TestPki::new().unwrap();
    let build = |adjust: &dyn Fn(&mut ServerConfig)| {
        let mut server = ServerConfig::ephemeral();
        server.peer_identity.peer_identity = shop_runtime::PeerIdentitySource::Linkerd;
        server.peer_identity.service_account = Some("payment-processor".into());
        server.peer_identity.pod_namespace = Some("shop".into());
        adjust(&mut server);
        App::build(Config {
            server,
            telemetry: TelemetryConfig {
                log_format: LogFormat::Text,
            },
            behavior: BehaviorConfig::default(),
        })
    };
    let files = pki.issue("payment-processor").unwrap();
    let error = build(&|server| server.tls = TlsConfig::from_files(&files))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("unset TLS_CERT_FILE"), "{error}");
    let error = build(&|server| server.peer_identity.service_account = None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("SERVICE_ACCOUNT"), "{error}");
}
