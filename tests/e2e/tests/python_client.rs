//! A client generated in Python with grpcio-tools from proto/ talks to the real services over
//! TLS, as a user does: trusting the mesh's CA, presenting no certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use shop_e2e::{python, start_catalog_with, start_identity_with, workspace_root};
use shop_proto::{
    catalog::{CreateProductRequest, catalog_service_client::CatalogServiceClient},
    common::Money,
};
use shop_testkit::{Nats, Postgres, TestPki};
use tonic::transport::Channel;

#[tokio::test]
async fn generated_python_client_registers_logs_in_and_reads_a_product() {
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let pki = TestPki::new().unwrap();
    let identity = start_identity_with(
        &postgres,
        &nats,
        shop_e2e::tls_server(&pki, "identity").unwrap(),
    )
    .await
    .unwrap();
    let catalog = start_catalog_with(
        &postgres,
        &nats,
        shop_e2e::tls_server(&pki, "catalog").unwrap(),
    )
    .await
    .unwrap();

    // The product is created as the operator (the developer certificate may write).
    let mut client = CatalogServiceClient::new(
        Channel::from_shared(format!("http://{}", catalog.addr))
            .unwrap()
            .connect_with_connector_lazy(pki.connector("developer", "catalog").unwrap()),
    );
    let product = client
        .create_product(CreateProductRequest {
            sku: "PY-1".into(),
            name: "Snake plant".into(),
            description: String::new(),
            category: "garden".into(),
            price: Some(Money {
                units: 19,
                nanos: 990_000_000,
                currency_code: "USD".into(),
            }),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();

    let root = workspace_root();
    let generated = tempfile_dir();
    let python = python().unwrap();
    let ca_file = generated.join("ca.crt");
    std::fs::write(&ca_file, pki.ca().cert_pem()).unwrap();
    let protoc = tokio::process::Command::new(&python)
        .current_dir(&root)
        .args(["-m", "grpc_tools.protoc", "-Iproto", "-Iproto/vendor"])
        .arg(format!("--python_out={}", generated.display()))
        .arg(format!("--grpc_python_out={}", generated.display()))
        .args(proto_files(&root))
        .output()
        .await
        .expect("python runs");
    assert!(
        protoc.status.success(),
        "grpc_tools.protoc failed: {}",
        String::from_utf8_lossy(&protoc.stderr)
    );

    let run = tokio::process::Command::new(&python)
        .arg(root.join("tests/e2e/python/shop_client.py"))
        .env("PYTHONPATH", &generated)
        .env("IDENTITY_ADDR", identity.addr.to_string())
        .env("CATALOG_ADDR", catalog.addr.to_string())
        .env("PRODUCT_ID", &product.product_id)
        .env("CA_FILE", &ca_file)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("registered ada@example.com"), "{stdout}");
    assert!(stdout.contains("logged in: Bearer token"), "{stdout}");
    assert!(
        stdout.contains("RotateSigningKey without a certificate: UNAUTHENTICATED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("read product Snake plant 19.99 USD"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(generated);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shop-e2e-py-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn proto_files(root: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![root.join("proto/shop")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                files.push(
                    path.strip_prefix(root.join("proto"))
                        .unwrap()
                        .display()
                        .to_string(),
                );
            }
        }
    }
    // The vendored imports are generated too, so the Python modules import cleanly.
    files.extend(
        [
            "buf/validate/validate.proto",
            "google/api/annotations.proto",
            "google/api/http.proto",
        ]
        .map(String::from),
    );
    files
}
