//! Bad input gets INVALID_ARGUMENT naming the field in a small status, never INTERNAL.

use shop_proto::identity::{BatchGetUsersRequest, RegisterRequest};
use tonic::Code;

use crate::helpers::{spawn_app, violated_fields};

#[tokio::test]
async fn a_nul_in_a_string_is_invalid_argument_on_that_field() {
    let mut app = spawn_app().await;
    let err = app
        .client
        .register(RegisterRequest {
            email: "nul@example.com".into(),
            password: "correct horse battery".into(),
            display_name: "Ada\u{0}".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), vec!["display_name"]);
    app.stop().await;
}

/// The bytes `status` takes as response metadata (`grpc-message`, percent-encoded, and
/// `grpc-status-details-bin`, base64), which grpcio and grpc-go cap at 8 KiB.
fn status_bytes(status: &tonic::Status) -> usize {
    status
        .clone()
        .into_http::<tonic::body::Body>()
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

#[tokio::test]
async fn huge_messy_batches_get_a_small_invalid_argument() {
    let mut app = spawn_app().await;
    let repeated = uuid::Uuid::now_v7().to_string();
    for n in [100, 1_000, 100_000] {
        // Every third id malformed, every third the same, the rest distinct.
        let user_ids = (0..n)
            .map(|i| match i % 3 {
                0 => format!("user-{i}"),
                1 => repeated.clone(),
                _ => uuid::Uuid::now_v7().to_string(),
            })
            .collect();
        let call = app
            .client
            .batch_get_users(BatchGetUsersRequest { user_ids });
        let err = tokio::time::timeout(std::time::Duration::from_secs(60), call)
            .await
            .expect("validation answers")
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{n} ids: {}",
            err.message()
        );
        let fields = violated_fields(&err);
        assert!(
            !fields.is_empty() && fields.iter().all(|f| f.starts_with("user_ids")),
            "{n} ids: {fields:?}"
        );
        assert!(
            status_bytes(&err) < 6 * 1024,
            "{n} ids: a status of {} bytes",
            status_bytes(&err)
        );
    }
    app.stop().await;
}
