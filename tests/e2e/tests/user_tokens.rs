//! User tokens and owner rules over real mutual TLS: identity issues a token, notifications
//! verifies it with the keys identity publishes (GetJwks) and lets a user read only their own
//! notifications, and identity only their own record; every kind of bad token is UNAUTHENTICATED.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use shop_proto::{
    identity::{
        GetUserRequest, LoginRequest, RegisterRequest, RotateSigningKeyRequest,
        identity_service_client::IdentityServiceClient,
    },
    notifications::{
        ListNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
};
use shop_testkit::{Nats, Postgres, TestPki};
use tonic::{Code, transport::Channel};

async fn list_as(
    client: &mut NotificationServiceClient<Channel>,
    token: Option<&str>,
    user_id: &str,
) -> Code {
    let mut request = tonic::Request::new(ListNotificationsRequest {
        user_id: user_id.to_owned(),
        page_size: 10,
        page_token: String::new(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    match client.list_notifications(request).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn a_user_reads_only_their_own_notifications_and_bad_tokens_are_unauthenticated() {
    let pki = TestPki::new().unwrap();
    let postgres = Postgres::start().await.unwrap();
    let nats = Nats::start().await.unwrap();
    // Identity verifies its own users' tokens (GetUser) through its own GetJwks, as in the
    // mesh: its address is chosen first so IDENTITY_URL can name it.
    let mut identity_server = shop_e2e::tls_server(&pki, "identity").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    identity_server.grpc_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    identity_server.user_tokens.identity_url = Some(format!("http://127.0.0.1:{port}"));
    let identity = shop_e2e::start_identity_with(&postgres, &nats, identity_server)
        .await
        .unwrap();
    let mut server = shop_e2e::tls_server(&pki, "notifications").unwrap();
    server.user_tokens.identity_url = Some(format!("http://{}", identity.addr));
    let notifications = shop_e2e::start_notifications_with(&postgres, &nats, server)
        .await
        .unwrap();

    let mut users =
        IdentityServiceClient::new(shop_e2e::user_channel(&pki, identity.addr).unwrap());
    let register = |email: &'static str| {
        let mut users = users.clone();
        async move {
            users
                .register(RegisterRequest {
                    email: email.into(),
                    password: "correct horse battery".into(),
                    display_name: email.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap()
                .user_id
        }
    };
    let ada = register("ada@example.com").await;
    let bob = register("bob@example.com").await;
    let token = users
        .login(LoginRequest {
            email: "ada@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;

    // A user's own record, and not another's.
    let get_user = |user_id: &str| {
        let mut users = users.clone();
        let mut request = tonic::Request::new(GetUserRequest {
            user_id: user_id.to_owned(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        async move {
            match users.get_user(request).await {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            }
        }
    };
    assert_eq!(get_user(&ada).await, Code::Ok);
    assert_eq!(
        get_user(&bob).await,
        Code::PermissionDenied,
        "Ada reading Bob's record"
    );

    let mut client =
        NotificationServiceClient::new(shop_e2e::user_channel(&pki, notifications.addr).unwrap());
    assert_eq!(list_as(&mut client, Some(&token), &ada).await, Code::Ok);
    assert_eq!(
        list_as(&mut client, Some(&token), &bob).await,
        Code::PermissionDenied,
        "Ada reading Bob's notifications"
    );
    assert_eq!(
        list_as(&mut client, None, &ada).await,
        Code::Unauthenticated
    );

    // Tokens that must not pass, each built from the real one.
    let parts: Vec<&str> = token.split('.').collect();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let encode = |value: serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let alg_none = format!(
        "{}.{}.",
        encode(serde_json::json!({"alg": "none", "kid": kid})),
        parts[1]
    );
    // HS256 keyed with the public key (the algorithm-confusion attack).
    let hs256 = format!(
        "{}.{}.{}",
        encode(serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
        parts[1],
        parts[2]
    );
    // A well-formed EdDSA token from a key identity never published.
    let stranger = shop_auth::JwtSigner::new(
        "not-a-published-key".into(),
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        "shop-identity".into(),
        "shop".into(),
        Duration::from_secs(600),
    );
    let (unknown_kid, _) = stranger.issue(&ada, None).unwrap();
    // Signed by identity's key id but for another audience: re-signing needs the key, so
    // the claims are swapped and the signature no longer matches.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["aud"] = "elsewhere".into();
    let other_audience = format!("{}.{}.{}", parts[0], encode(claims), parts[2]);
    for (what, bad) in [
        ("garbage", "not-a-token".to_owned()),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("unknown kid", unknown_kid),
        ("tampered audience", other_audience),
    ] {
        assert_eq!(
            list_as(&mut client, Some(&bad), &ada).await,
            Code::Unauthenticated,
            "{what}"
        );
    }

    // A rotation: the next login is signed by a key notifications has not seen, within a
    // second of its last fetch; the token waits for the key instead of being refused.
    let developer = Channel::from_shared(format!("http://{}", identity.addr))
        .unwrap()
        .connect_with_connector_lazy(pki.connector("developer", "identity").unwrap());
    let rotation = IdentityServiceClient::new(developer)
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    let fresh = users
        .login(LoginRequest {
            email: "ada@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(fresh.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header["kid"],
        rotation.kid.as_str(),
        "signed by the new key"
    );
    assert_eq!(list_as(&mut client, Some(&fresh), &ada).await, Code::Ok);
    assert_eq!(
        list_as(&mut client, Some(&token), &ada).await,
        Code::Ok,
        "the replaced key still verifies"
    );
}
