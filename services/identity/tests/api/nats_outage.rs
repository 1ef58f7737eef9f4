//! A NATS outage does not take identity out of service: health stays SERVING, Register keeps
//! working (its event waits in the outbox), `/readyz` and `/metrics` say NATS is down, and the
//! event reaches JetStream once NATS is back.

use std::time::Duration;

use prost::Message as _;
use shop_proto::identity::UserRegistered;
use shop_testkit::{http_get, wait_for, wait_until};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::spawn_app;

const IDENTITY: &str = "shop.identity.v1.IdentityService";

async fn status_of(addr: std::net::SocketAddr, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut health = HealthClient::new(channel);
    let response = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(response.into_inner().status).ok()
}

#[tokio::test]
async fn nats_outage_is_reported_without_leaving_traffic_and_events_wait_in_the_outbox() {
    let mut app = spawn_app().await;
    // The first readiness check may run before the NATS connection is up ("connection
    // Pending"): wait for it to be reported ok rather than racing it.
    let admin = app.admin_addr;
    let body = wait_for(Duration::from_secs(15), || async move {
        let (code, body) = http_get(admin, "/readyz").await.ok()?;
        (code == 200 && body.contains("[+]nats ok")).then_some(body)
    })
    .await
    .expect("/readyz reports NATS up");
    assert!(body.contains("[+]postgres ok"), "{body}");

    app.nats.stop().await.unwrap();
    let admin = app.admin_addr;
    let body = wait_for(Duration::from_secs(15), || async move {
        let (_, body) = http_get(admin, "/readyz").await.ok()?;
        body.contains("[-]nats down").then_some(body)
    })
    .await
    .expect("/readyz names NATS as down");
    assert!(body.starts_with("ready\n"), "{body}");
    assert!(body.contains("does not gate traffic"), "{body}");
    assert_eq!(http_get(admin, "/readyz").await.unwrap().0, 200);
    let (_, metrics) = http_get(admin, "/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"shop_dependency_up{dependency="nats",gates_traffic="false"} 0"#),
        "metrics were:\n{metrics}"
    );
    for service in ["", IDENTITY] {
        assert_eq!(
            status_of(app.grpc_addr, service).await,
            Some(ServingStatus::Serving),
            "health of {service:?} while NATS is down"
        );
    }

    let user = app
        .register("ada@example.com", "correct horse battery")
        .await;

    app.nats.restart().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let delivered = wait_for(Duration::from_secs(30), || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("SHOP_IDENTITY").await.ok()?;
            let message = stream
                .get_last_raw_message_by_subject(identity::events::USER_REGISTERED)
                .await
                .ok()?;
            UserRegistered::decode(message.payload).ok()
        }
    })
    .await
    .expect("the outboxed UserRegistered reaches JetStream after NATS returns");
    assert_eq!(delivered.user_id, user.user_id);
    wait_until(Duration::from_secs(15), || async move {
        http_get(admin, "/readyz")
            .await
            .is_ok_and(|(_, body)| body.contains("[+]nats ok"))
    })
    .await
    .expect("/readyz shows NATS back");
    app.stop().await;
}
