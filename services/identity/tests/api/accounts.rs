//! Registration, lookup, and every way to get them wrong.

use shop_proto::identity::{BatchGetUsersRequest, GetUserRequest, LoginRequest, RegisterRequest};
use tonic::Code;

use crate::helpers::{spawn_app, violated_fields};

#[tokio::test]
async fn registered_user_reads_back_alone_and_in_batches() {
    let mut app = spawn_app().await;
    let user = app
        .register("Ada@Example.COM", "correct horse battery")
        .await;
    assert_eq!(user.email, "ada@example.com");
    let read = app
        .client
        .get_user(GetUserRequest {
            user_id: user.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(read, user);

    let missing = uuid::Uuid::now_v7().to_string();
    let batch = app
        .client
        .batch_get_users(BatchGetUsersRequest {
            user_ids: vec![missing.clone(), user.user_id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.users, vec![user]);
    assert_eq!(batch.not_found_user_ids, vec![missing]);
    app.stop().await;
}

#[tokio::test]
async fn duplicate_email_is_already_exists_on_email_whatever_its_case() {
    let mut app = spawn_app().await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    let err = app
        .client
        .register(RegisterRequest {
            email: "ADA@example.com".into(),
            password: "another password".into(),
            display_name: "Imposter".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(violated_fields(&err), vec!["email"]);
    app.stop().await;
}

#[tokio::test]
async fn bad_registrations_name_the_field() {
    let mut app = spawn_app().await;
    let cases = [
        (
            "email",
            RegisterRequest {
                email: "not-an-email".into(),
                password: "long enough".into(),
                display_name: "A".into(),
            },
        ),
        (
            "password",
            RegisterRequest {
                email: "a@example.com".into(),
                password: "short".into(),
                display_name: "A".into(),
            },
        ),
        (
            "display_name",
            RegisterRequest {
                email: "a@example.com".into(),
                password: "long enough".into(),
                display_name: String::new(),
            },
        ),
        (
            "display_name",
            RegisterRequest {
                email: "a@example.com".into(),
                password: "long enough".into(),
                display_name: "   ".into(),
            },
        ),
    ];
    for (field, request) in cases {
        let err = app.client.register(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violated_fields(&err), vec![field]);
    }
    app.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_are_unauthenticated_alike() {
    let mut app = spawn_app().await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    let wrong = app
        .client
        .login(LoginRequest {
            email: "ada@example.com".into(),
            password: "incorrect horse".into(),
        })
        .await
        .unwrap_err();
    let unknown = app
        .client
        .login(LoginRequest {
            email: "nobody@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        wrong.message(),
        unknown.message(),
        "must not tell which one was wrong"
    );

    let malformed = app
        .client
        .login(LoginRequest {
            email: "no at sign".into(),
            password: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&malformed), vec!["email"]);
    app.stop().await;
}

#[tokio::test]
async fn unknown_user_is_not_found() {
    let mut app = spawn_app().await;
    let err = app
        .client
        .get_user(GetUserRequest {
            user_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}
