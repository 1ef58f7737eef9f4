//! Password work is bounded and failed logins are throttled, per account and per peer, with
//! RESOURCE_EXHAUSTED and RetryInfo.

use std::time::Duration;

use futures::future::join_all;
use shop_proto::identity::LoginRequest;
use tonic::Code;

use crate::helpers::{TestApp, retry_delay, spawn_app_with};

fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: password.into(),
    }
}

async fn code_of(app: &mut TestApp, email: &str, password: &str) -> Result<(), tonic::Status> {
    app.client.login(login(email, password)).await.map(drop)
}

#[tokio::test]
async fn failed_logins_lock_the_account_even_for_the_right_password_and_only_it() {
    let mut app = spawn_app_with(|config| {
        config.passwords.login_failures_per_account = 3;
        config.passwords.login_account_forgive_secs = 3600;
    })
    .await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    app.register("bob@example.com", "correct horse battery")
        .await;
    for _ in 0..3 {
        let err = code_of(&mut app, "ada@example.com", "wrong guess")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let locked = code_of(&mut app, "ADA@example.com", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    let delay = retry_delay(&locked).expect("RetryInfo with a delay");
    assert!(delay > Duration::from_secs(3000), "{delay:?}");
    // Another account from the same peer is not affected.
    code_of(&mut app, "bob@example.com", "correct horse battery")
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn failed_logins_from_one_peer_lock_it_across_accounts() {
    let mut app = spawn_app_with(|config| {
        config.passwords.login_failures_per_peer = 3;
        config.passwords.login_peer_forgive_secs = 3600;
    })
    .await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    for n in 0..3 {
        let err = code_of(&mut app, &format!("guess{n}@example.com"), "wrong guess")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let locked = code_of(&mut app, "ada@example.com", "correct horse battery")
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted, "{locked:?}");
    assert!(retry_delay(&locked).is_some_and(|d| d > Duration::from_secs(3000)));
    app.stop().await;
}

#[tokio::test]
async fn successful_logins_are_not_counted_as_failures() {
    let mut app = spawn_app_with(|config| {
        config.passwords.login_failures_per_account = 1;
        config.passwords.login_failures_per_peer = 1;
        config.passwords.login_account_forgive_secs = 3600;
        config.passwords.login_peer_forgive_secs = 3600;
    })
    .await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    for _ in 0..4 {
        code_of(&mut app, "ada@example.com", "correct horse battery")
            .await
            .unwrap();
    }
    app.stop().await;
}

#[tokio::test]
async fn password_checks_beyond_the_hashing_limit_are_refused_with_retry_info() {
    let mut app = spawn_app_with(|config| {
        config.passwords.password_hash_concurrency = Some(1);
        config.passwords.password_hash_wait_ms = 0;
    })
    .await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    // With one slot and no wait, some of a burst of logins find the slot taken. Each round is
    // one burst; a machine that served a whole burst one by one gets another round.
    let mut refused = None;
    for _round in 0..5 {
        let calls = (0..12).map(|_| {
            let mut client = app.client.clone();
            async move {
                client
                    .login(login("ada@example.com", "correct horse battery"))
                    .await
            }
        });
        let results = join_all(calls).await;
        assert!(results.iter().any(Result::is_ok), "someone got the slot");
        for result in results {
            match result {
                Ok(_) => {}
                Err(status) if status.code() == Code::ResourceExhausted => {
                    refused = Some(status);
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let refused = refused.expect("a login beyond the hashing limit is refused");
    assert!(retry_delay(&refused).is_some(), "{refused:?}");
    // The slot comes back: a lone login works.
    code_of(&mut app, "ada@example.com", "correct horse battery")
        .await
        .unwrap();
    app.stop().await;
}
