//! The runtime's server protection is on every service: per-caller rate limits, keyed by who
//! the caller proved to be (its mTLS certificate), not by what it says in a header.

use shop_proto::catalog::{ListProductsRequest, catalog_service_client::CatalogServiceClient};
use shop_runtime::{ServerConfig, TlsConfig};
use shop_testkit::TestPki;
use tonic::{Code, transport::Channel};

use crate::helpers::spawn_app_with;

/// A client presenting `caller`'s certificate.
fn client_as(
    pki: &TestPki,
    caller: &str,
    addr: std::net::SocketAddr,
) -> CatalogServiceClient<Channel> {
    let connector = pki.connector(caller, "catalog").unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector_lazy(connector);
    CatalogServiceClient::new(channel)
}

/// A request claiming to come from `claimed` in the caller header.
fn claiming(claimed: &str) -> tonic::Request<ListProductsRequest> {
    let mut request = tonic::Request::new(ListProductsRequest::default());
    request
        .metadata_mut()
        .insert("x-caller-id", claimed.parse().unwrap());
    request
}

async fn code_of(client: &mut CatalogServiceClient<Channel>, claimed: &str) -> Code {
    match client.list_products(claiming(claimed)).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn a_caller_over_its_rate_limit_is_refused_whatever_it_claims_and_others_are_not() {
    let pki = TestPki::new().unwrap();
    let mut config = ServerConfig::ephemeral();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 1;
    config.tls = TlsConfig::from_files(&pki.issue("catalog").unwrap());
    let app = spawn_app_with(config).await;
    let mut noisy = client_as(&pki, "orders", app.grpc_addr);

    // A fresh caller id on every call: each would have had its own quota when the header
    // was the key.
    let mut codes = Vec::new();
    for i in 0..1000 {
        codes.push(code_of(&mut noisy, &format!("random-{i}")).await);
    }
    let admitted = codes.iter().filter(|c| **c == Code::Ok).count();
    // One, plus one more for each second the loop took.
    assert!((1..=3).contains(&admitted), "admitted {admitted} of 1000");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::ResourceExhausted)),
        "{codes:?}"
    );

    // Another service has its own quota.
    let mut quiet = client_as(&pki, "shipping", app.grpc_addr);
    assert_eq!(code_of(&mut quiet, "orders").await, Code::Ok);
    app.shutdown().await;
}
