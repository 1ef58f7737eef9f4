//! Login issues EdDSA tokens that verify against the published JWKS, and the signing key
//! survives restarts.

use shop_auth::{Jwk, JwtVerifier};
use shop_proto::identity::{GetJwksRequest, LoginRequest};

use crate::helpers::{spawn_app, spawn_on};

async fn jwks(app: &mut crate::helpers::TestApp) -> Vec<Jwk> {
    app.client
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

#[tokio::test]
async fn login_token_verifies_against_the_jwks() {
    let mut app = spawn_app().await;
    let user = app
        .register("ada@example.com", "correct horse battery")
        .await;
    let login = app
        .client
        .login(LoginRequest {
            email: "ada@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(login.token_type, "Bearer");
    assert_eq!(login.user.as_ref().unwrap().user_id, user.user_id);

    let keys = jwks(&mut app).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (
            keys[0].kty.as_str(),
            keys[0].crv.as_str(),
            keys[0].alg.as_str()
        ),
        ("OKP", "Ed25519", "EdDSA")
    );
    let verifier = JwtVerifier::new(&keys, "shop-identity".into(), "shop".into()).unwrap();
    let claims = verifier.verify(&login.access_token).unwrap();
    assert_eq!(claims.sub, user.user_id);
    assert_eq!(
        i64::try_from(claims.exp).unwrap(),
        login.expires_at.unwrap().seconds
    );
    app.stop().await;
}

#[tokio::test]
async fn signing_key_survives_a_restart() {
    let mut app = spawn_app().await;
    let before = jwks(&mut app).await;
    let (postgres, nats, database_url) = app.stop().await;
    let mut again = spawn_on(postgres, nats, database_url).await;
    assert_eq!(jwks(&mut again).await, before);
    again.stop().await;
}

/// `ADMIN_EMAILS` decides whose tokens grant the admin scopes; nobody else's carry any.
#[tokio::test]
async fn admins_tokens_grant_the_admin_scopes_and_only_theirs() {
    let mut app = crate::helpers::spawn_app_with(|config| {
        config.tokens.admin_emails = vec![" Root@Example.com ".into()];
    })
    .await;
    app.register("root@example.com", "correct horse battery")
        .await;
    app.register("ada@example.com", "correct horse battery")
        .await;
    let keys = jwks(&mut app).await;
    let verifier = JwtVerifier::new(&keys, "shop-identity".into(), "shop".into()).unwrap();
    let claims_of = |email: &'static str| {
        let mut client = app.client.clone();
        let verifier = verifier.clone();
        async move {
            let token = client
                .login(LoginRequest {
                    email: email.into(),
                    password: "correct horse battery".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .access_token;
            verifier.verify(&token).unwrap()
        }
    };
    let root = claims_of("root@example.com").await;
    assert!(root.has_scope("catalog:write") && root.has_scope("inventory:write"));
    let ada = claims_of("ada@example.com").await;
    assert_eq!(ada.scope, None);
    app.stop().await;
}
