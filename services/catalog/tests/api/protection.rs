//! The runtime's server protection is on every service: per-caller rate limits.

use shop_proto::catalog::ListProductsRequest;
use shop_runtime::ServerConfig;
use tonic::Code;

use crate::helpers::spawn_app_with;

fn from(caller: &str) -> tonic::Request<ListProductsRequest> {
    let mut request = tonic::Request::new(ListProductsRequest::default());
    request
        .metadata_mut()
        .insert("x-caller-id", caller.parse().unwrap());
    request
}

#[tokio::test]
async fn a_caller_over_its_rate_limit_is_refused_and_others_are_not() {
    let mut config = ServerConfig::ephemeral();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 3;
    let mut app = spawn_app_with(config).await;

    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(match app.client.list_products(from("noisy")).await {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        });
    }
    let refused = codes
        .iter()
        .filter(|c| **c == Code::ResourceExhausted)
        .count();
    assert!(
        refused >= 5,
        "the noisy caller kept getting through: {codes:?}"
    );
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::Ok | Code::ResourceExhausted)),
        "{codes:?}"
    );

    // Another caller has its own quota.
    app.client.list_products(from("quiet")).await.unwrap();
    app.shutdown().await;
}
