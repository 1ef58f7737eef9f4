//! SIGTERM under a stream of calls: health flips to NOT_SERVING, in-flight calls complete,
//! the process exits 0 within its grace period. Runs the real `catalog` binary.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use shop_proto::catalog::{ListProductsRequest, catalog_service_client::CatalogServiceClient};
use shop_testkit::{Postgres, free_port, wait_until};
use tokio::process::Command;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn never_sent(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    if status.code() != Code::Cancelled {
        return false;
    }
    let mut source = status.source();
    while let Some(err) = source {
        if let Some(hyper_err) = err.downcast_ref::<hyper::Error>() {
            return hyper_err.is_canceled();
        }
        source = err.source();
    }
    false
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_exits_zero() {
    let postgres = Postgres::start().await.unwrap();
    let database_url = postgres.fresh_database().await.unwrap();
    let grpc_port = free_port().unwrap();
    let admin_port = free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_catalog"))
        .env("GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("DATABASE_URL", database_url)
        .env("SHUTDOWN_DRAIN_SECS", "1")
        .env("SHUTDOWN_GRACE_SECS", "5")
        .env("READINESS_INTERVAL_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let endpoint = format!("http://127.0.0.1:{grpc_port}");
    let channel = shop_testkit::wait_for(Duration::from_secs(30), || {
        let endpoint = endpoint.clone();
        async move { Channel::from_shared(endpoint).ok()?.connect().await.ok() }
    })
    .await
    .expect("catalog accepts connections");
    let mut health = HealthClient::new(channel.clone());
    wait_until(Duration::from_secs(30), || {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        }
    })
    .await
    .expect("SERVING");

    // Watch health while the shutdown happens.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let saw_not_serving = tokio::spawn(async move {
        while let Ok(Some(update)) = watch.message().await {
            if update.status == ServingStatus::NotServing as i32 {
                return true;
            }
        }
        false
    });

    // A steady stream of calls from four clients.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let ok_after_sigterm = Arc::new(AtomicUsize::new(0));
    let sigterm_sent = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let mut client = CatalogServiceClient::new(channel.clone());
        let (stop, ok, ok_after, sent) = (
            stop.clone(),
            ok.clone(),
            ok_after_sigterm.clone(),
            sigterm_sent.clone(),
        );
        callers.push(tokio::spawn(async move {
            let mut unexpected = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.list_products(ListProductsRequest::default()).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if sent.load(Ordering::Relaxed) {
                            ok_after.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // After the listener closes, new calls find no server: that is expected.
                    // So is a call the client queued on the connection as the server's GOAWAY
                    // arrived: hyper reports it as canceled before it was ever sent, so the
                    // server never accepted it (a client retries it, it is not "in flight").
                    Err(status) if status.code() == Code::Unavailable || never_sent(&status) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(status) => unexpected.push(status),
                }
            }
            unexpected
        }));
    }
    wait_until(Duration::from_secs(10), || {
        let ok = ok.clone();
        async move { ok.load(Ordering::Relaxed) > 50 }
    })
    .await
    .unwrap();

    let pid = child.id().expect("child pid");
    sigterm_sent.store(true, Ordering::Relaxed);
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(kill.success());

    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within drain + grace")
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(exit.success(), "exit status {exit:?}");
    assert!(
        saw_not_serving.await.unwrap(),
        "health never reported NOT_SERVING"
    );
    assert!(
        ok_after_sigterm.load(Ordering::Relaxed) > 0,
        "calls kept succeeding during the drain"
    );
    for caller in callers {
        let unexpected = caller.await.unwrap();
        assert!(
            unexpected.is_empty(),
            "calls failed other than UNAVAILABLE: {unexpected:?}"
        );
    }
}
