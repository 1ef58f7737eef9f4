//! grpcurl-compatible access through server reflection, with `buf curl`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::process::Output;

use shop_e2e::{buf, start_catalog};
use shop_testkit::{Nats, Postgres};

async fn buf_curl(args: &[&str]) -> Output {
    let output = tokio::process::Command::new(buf().unwrap())
        .arg("curl")
        .args(["--protocol", "grpc", "--http2-prior-knowledge"])
        .args(args)
        .output()
        .await
        .expect("buf runs");
    assert!(
        output.status.success(),
        "buf curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn reflection_lists_services_and_buf_curl_creates_and_reads_a_product() {
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let catalog = start_catalog(&postgres, &nats).await.unwrap();
    let base = format!("http://{}", catalog.addr);

    let listed = buf_curl(&["--list-services", &base]).await;
    let services = String::from_utf8(listed.stdout).unwrap();
    for expected in [
        "shop.catalog.v1.CatalogService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.lines().any(|l| l.trim() == expected),
            "{expected} missing from:\n{services}"
        );
    }

    let created = buf_curl(&[
        "-d",
        r#"{"sku":"BUF-1","name":"Curl mug","category":"kitchen","price":{"units":"12","nanos":500000000,"currencyCode":"EUR"}}"#,
        &format!("{base}/shop.catalog.v1.CatalogService/CreateProduct"),
    ])
    .await;
    let created: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let product_id = created["product"]["productId"].as_str().unwrap().to_owned();

    let read = buf_curl(&[
        "-d",
        &format!(r#"{{"productId":"{product_id}"}}"#),
        &format!("{base}/shop.catalog.v1.CatalogService/GetProduct"),
    ])
    .await;
    let read: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(read["product"]["name"], "Curl mug");
    assert_eq!(read["product"]["price"]["currencyCode"], "EUR");
    assert_eq!(read["product"]["price"]["units"], "12");
}
