//! Signing keys at rest and their rotation: sealed under the key-encryption key, resealed
//! when it changes, rotated by `RotateSigningKey` (the developer's certificate only), the
//! replaced key verifying until its tokens have expired and then retired.

use std::time::Duration;

use identity::{App, Config, Kek};
use shop_auth::{Jwk, JwtVerifier};
use shop_proto::identity::{
    GetJwksRequest, LoginRequest, RotateSigningKeyRequest,
    identity_service_client::IdentityServiceClient,
};
use shop_runtime::TlsConfig;
use shop_testkit::{Nats, Postgres, TestPki};
use tonic::{Code, transport::Channel};

use crate::helpers::{TestApp, config, spawn_app_with};

fn kek(byte: u8) -> Kek {
    Kek::from_bytes([byte; 32])
}

/// `(kid, has clear private half, sealed length, kek_id, retired)` of every key, oldest first.
async fn stored_keys(database_url: &str) -> Vec<(String, bool, Option<i32>, Option<String>, bool)> {
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let rows = sqlx::query_as(
        "SELECT kid, private_key IS NOT NULL, length(sealed_key), kek_id, retired_at IS NOT NULL \
         FROM signing_keys ORDER BY created_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

async fn jwks(client: &mut IdentityServiceClient<Channel>) -> Vec<Jwk> {
    client
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|k| Jwk {
            kty: k.kty,
            crv: k.crv,
            kid: k.kid,
            x: k.x,
            alg: k.alg,
            use_: k.r#use,
        })
        .collect()
}

fn kids(keys: &[Jwk]) -> Vec<String> {
    keys.iter().map(|k| k.kid.clone()).collect()
}

fn verifier(keys: &[Jwk]) -> JwtVerifier {
    JwtVerifier::new(keys, "shop-identity".into(), "shop".into()).unwrap()
}

async fn login(app: &mut TestApp) -> String {
    app.client
        .login(LoginRequest {
            email: "ada@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
}

/// The start error of an identity on `database_url` configured by `adjust`, with its causes.
async fn start_error(database_url: &str, nats: &Nats, adjust: impl FnOnce(&mut Config)) -> String {
    let mut config = config(database_url, &nats.url());
    adjust(&mut config);
    let started = App::build(config).await;
    assert!(started.is_err(), "identity started");
    match started {
        Ok(_) => String::new(),
        Err(error) => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

#[tokio::test]
async fn signing_keys_are_sealed_at_rest_and_open_only_with_a_configured_kek() {
    let mut app = spawn_app_with(|config| config.tokens.signing_key_kek = Some(kek(1))).await;
    let published = jwks(&mut app.client).await;
    let stored = stored_keys(&app.database_url).await;
    assert_eq!(stored.len(), 1);
    let (kid, clear, sealed_len, kek_id, retired) = stored[0].clone();
    assert_eq!(kid, published[0].kid);
    assert!(!clear, "no private half in clear");
    // 12-byte nonce, 32-byte key, 16-byte tag.
    assert_eq!(sealed_len, Some(60));
    assert_eq!(kek_id.as_deref(), Some(kek(1).id()));
    assert!(!retired);

    // Another key-encryption key does not open it: the service refuses to start, naming
    // the settings, instead of signing with garbage or a new key.
    let (postgres, nats, database_url) = app.stop().await;
    let error = start_error(&database_url, &nats, |config| {
        config.tokens.signing_key_kek = Some(kek(2));
    })
    .await;
    assert!(error.contains(kek(1).id()), "{error}");
    assert!(error.contains("SIGNING_KEY_PREVIOUS_KEKS"), "{error}");

    // Rotating the key-encryption key: the old one as previous, and the key is resealed.
    let mut again = crate::helpers::spawn_on_with(postgres, nats, database_url, |config| {
        config.tokens.signing_key_kek = Some(kek(2));
        config.tokens.signing_key_previous_keks = vec![kek(1)];
    })
    .await;
    assert_eq!(jwks(&mut again.client).await, published, "the same key");
    let stored = stored_keys(&again.database_url).await;
    assert_eq!(stored[0].3.as_deref(), Some(kek(2).id()), "resealed");
    assert_eq!(stored[0].2, Some(60));

    // From now on the previous key-encryption key is not needed.
    let (postgres, nats, database_url) = again.stop().await;
    let mut third = crate::helpers::spawn_on_with(postgres, nats, database_url, |config| {
        config.tokens.signing_key_kek = Some(kek(2));
    })
    .await;
    assert_eq!(jwks(&mut third.client).await, published);
    third.stop().await;
}

#[tokio::test]
async fn keys_stored_in_clear_are_sealed_once_a_kek_is_configured() {
    let mut app = spawn_app_with(|_| {}).await;
    let published = jwks(&mut app.client).await;
    let stored = stored_keys(&app.database_url).await;
    assert!(stored[0].1, "no KEK: in clear");
    assert_eq!(stored[0].3, None);

    let (postgres, nats, database_url) = app.stop().await;
    let mut again = crate::helpers::spawn_on_with(postgres, nats, database_url, |config| {
        config.tokens.signing_key_kek = Some(kek(7));
    })
    .await;
    assert_eq!(jwks(&mut again.client).await, published);
    let stored = stored_keys(&again.database_url).await;
    assert!(!stored[0].1, "the clear copy is gone");
    assert_eq!(stored[0].3.as_deref(), Some(kek(7).id()));
    again.stop().await;
}

#[tokio::test]
async fn a_rotated_key_signs_new_tokens_and_the_replaced_one_verifies_until_its_tokens_expire() {
    let mut app = spawn_app_with(|config| {
        config.tokens.signing_key_kek = Some(kek(3));
        config.tokens.jwt_ttl_secs = 2;
        config.tokens.signing_key_refresh_secs = 1;
        config.tokens.signing_key_grace_secs = 1;
    })
    .await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    let before = jwks(&mut app.client).await;
    let old_token = login(&mut app).await;

    let rotation = app
        .client
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotation.kid, before[0].kid);
    assert_eq!(
        rotation.published_kids,
        vec![rotation.kid.clone(), before[0].kid.clone()],
        "newest first"
    );
    let retire_at = rotation.replaced_keys_retire_at.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // ttl 2 + refresh 1 + grace 1.
    assert!(
        (3..=5).contains(&(retire_at.seconds - i64::try_from(now).unwrap())),
        "{retire_at:?}"
    );

    let after = jwks(&mut app.client).await;
    assert_eq!(kids(&after), rotation.published_kids);
    let new_token = login(&mut app).await;
    let only_new: Vec<Jwk> = after
        .iter()
        .filter(|k| k.kid == rotation.kid)
        .cloned()
        .collect();
    assert!(
        verifier(&only_new).verify(&new_token).is_ok(),
        "new tokens are signed by the new key"
    );
    assert!(verifier(&only_new).verify(&old_token).is_err());
    assert!(
        verifier(&after).verify(&old_token).is_ok(),
        "the replaced key still verifies"
    );

    // After ttl + refresh + grace the replaced key is retired and its private half gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if kids(&jwks(&mut app.client).await) == vec![rotation.kid.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replaced key was not retired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = stored_keys(&app.database_url).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].0, before[0].kid);
    assert!(
        stored[0].4 && !stored[0].1 && stored[0].2.is_none() && stored[0].3.is_none(),
        "retired without material: {:?}",
        stored[0]
    );
    assert!(!stored[1].4);
    app.stop().await;
}

/// A running identity with mutual TLS on, and a way to call it as anyone.
struct SecuredIdentity {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), shop_runtime::RuntimeError>>,
    _postgres: Postgres,
    _nats: Nats,
}

#[tokio::test]
async fn only_the_developer_certificate_may_rotate_signing_keys() {
    let pki = TestPki::new().unwrap();
    let postgres = Postgres::start().await.unwrap();
    let database_url = postgres.fresh_database().await.unwrap();
    let nats = Nats::start().await.unwrap();
    let mut config = config(&database_url, &nats.url());
    config.server.tls = TlsConfig::from_files(&pki.issue("identity").unwrap());
    let app = App::build(config).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = app.grpc_addr();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let identity = SecuredIdentity {
        addr,
        stop,
        task,
        _postgres: postgres,
        _nats: nats,
    };
    let uri = format!("http://{}", identity.addr);
    let rotate_as = |channel: Channel| async move {
        match IdentityServiceClient::new(channel)
            .rotate_signing_key(RotateSigningKeyRequest {})
            .await
        {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        }
    };
    let as_caller = |caller: &str| {
        Channel::from_shared(uri.clone())
            .unwrap()
            .connect_with_connector_lazy(pki.connector(caller, "identity").unwrap())
    };
    assert_eq!(rotate_as(as_caller("orders")).await, Code::PermissionDenied);
    let anonymous = Channel::from_shared(uri.clone())
        .unwrap()
        .connect_with_connector_lazy(pki.anonymous_connector().unwrap());
    assert_eq!(rotate_as(anonymous).await, Code::Unauthenticated);
    assert_eq!(rotate_as(as_caller("developer")).await, Code::Ok);
    let _ = identity.stop.send(());
    identity.task.await.unwrap().unwrap();
}
