//! `shop.identity.v1.IdentityService` over the store, and protobuf <-> domain mapping.
//!
//! Field rules (email format, password length, uuids) are enforced by the runtime's
//! validation layer before these handlers run.

use shop_runtime::authz::require_owner;
use std::{collections::HashMap, sync::Arc};

use shop_proto::identity::{self as pb, identity_service_server::IdentityService};
use shop_runtime::convert::timestamp;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    error::IdentityError,
    hashing::HashPool,
    keys::KeyRing,
    password,
    store::{PgIdentityStore, User},
    throttle::LoginThrottle,
};

/// The tonic service.
#[derive(Debug, Clone)]
pub struct IdentityGrpc {
    store: PgIdentityStore,
    keys: KeyRing,
    hashes: HashPool,
    throttle: Arc<LoginThrottle>,
    /// Normalised emails whose tokens grant the admin scopes.
    admins: Arc<std::collections::HashSet<String>>,
}

impl IdentityGrpc {
    pub fn new(
        store: PgIdentityStore,
        keys: KeyRing,
        hashes: HashPool,
        throttle: LoginThrottle,
        admin_emails: &[String],
    ) -> Self {
        Self {
            store,
            keys,
            hashes,
            throttle: Arc::new(throttle),
            admins: Arc::new(admin_emails.iter().map(|e| normalize_email(e)).collect()),
        }
    }
}

fn user_to_pb(user: User) -> pb::User {
    pb::User {
        user_id: user.id.to_string(),
        email: user.email,
        display_name: user.display_name,
        created_at: Some(timestamp(user.created_at)),
    }
}

/// One account per mailbox: compare emails trimmed and lower-cased.
fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn parse_id(field: &'static str, value: &str) -> Result<Uuid, IdentityError> {
    Uuid::parse_str(value).map_err(|_| IdentityError::InvalidArgument {
        field,
        reason: "must be a UUID".into(),
    })
}

#[tonic::async_trait]
impl IdentityService for IdentityGrpc {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let request = request.into_inner();
        let display_name = request.display_name.trim().to_owned();
        if display_name.is_empty() {
            return Err(IdentityError::InvalidArgument {
                field: "display_name",
                reason: "must not be blank".into(),
            }
            .into());
        }
        let email = normalize_email(&request.email);
        let password = request.password;
        let hash = self.hashes.run(move || password::hash(&password)).await?;
        let user = self.store.insert_user(&email, &display_name, &hash).await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(Response::new(pb::RegisterResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        // The peer's address, not a caller-supplied header: a guesser must not pick its key.
        let peer = shop_runtime::peer::remote_ip(&request);
        let request = request.into_inner();
        let email = normalize_email(&request.email);
        self.throttle.admit(&email, peer)?;
        let password = request.password;
        let Some(credentials) = self.store.credentials_by_email(&email).await? else {
            self.hashes
                .run(move || {
                    password::burn_verification(&password);
                    Ok(())
                })
                .await?;
            self.throttle.record_failure(&email, peer);
            return Err(IdentityError::BadCredentials.into());
        };
        let stored = credentials.password_hash.clone();
        if !self
            .hashes
            .run(move || password::verify(&password, &stored))
            .await?
        {
            self.throttle.record_failure(&email, peer);
            return Err(IdentityError::BadCredentials.into());
        }
        let user = credentials.into_user();
        let scope = self
            .admins
            .contains(&normalize_email(&user.email))
            .then_some(crate::config::ADMIN_SCOPES);
        let (access_token, expires_at) = self
            .keys
            .signer()
            .issue_with_scope(&user.id.to_string(), Some(&user.email), scope)
            .map_err(|err| IdentityError::Crypto(err.to_string()))?;
        Ok(Response::new(pb::LoginResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: i64::try_from(expires_at).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            user: Some(user_to_pb(user)),
        }))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::GetUserResponse>, Status> {
        require_owner(&request, "user_id", &request.get_ref().user_id)?;
        let id = parse_id("user_id", &request.get_ref().user_id)?;
        let user = self.store.get_user(id).await?;
        Ok(Response::new(pb::GetUserResponse {
            user: Some(user_to_pb(user)),
        }))
    }

    async fn batch_get_users(
        &self,
        request: Request<pb::BatchGetUsersRequest>,
    ) -> Result<Response<pb::BatchGetUsersResponse>, Status> {
        for (i, user_id) in request.get_ref().user_ids.iter().enumerate() {
            require_owner(&request, &format!("user_ids[{i}]"), user_id)?;
        }
        let ids = request
            .get_ref()
            .user_ids
            .iter()
            .map(|id| parse_id("user_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let mut found: HashMap<Uuid, User> = self
            .store
            .batch_get_users(&ids)
            .await?
            .into_iter()
            .map(|u| (u.id, u))
            .collect();
        let mut response = pb::BatchGetUsersResponse::default();
        for id in ids {
            match found.remove(&id) {
                Some(user) => response.users.push(user_to_pb(user)),
                None => response.not_found_user_ids.push(id.to_string()),
            }
        }
        Ok(Response::new(response))
    }

    async fn get_jwks(
        &self,
        _request: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        // From the database, not this replica's memory: a key another replica just
        // created is published at once, and a retired one is gone at once.
        let keys = self
            .store
            .published_keys()
            .await?
            .into_iter()
            .map(|row| {
                let jwk = public_jwk(&row.kid, &row.public_key)?;
                Ok(pb::Jwk {
                    kty: jwk.kty,
                    crv: jwk.crv,
                    kid: jwk.kid,
                    x: jwk.x,
                    alg: jwk.alg,
                    r#use: jwk.use_,
                })
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        Ok(Response::new(pb::GetJwksResponse { keys }))
    }

    async fn rotate_signing_key(
        &self,
        _request: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let rotation = self.keys.rotate().await?;
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid: rotation.kid,
            published_kids: rotation.published_kids,
            replaced_keys_retire_at: Some(prost_types::Timestamp::from(
                rotation.replaced_keys_retire_at,
            )),
        }))
    }
}

fn public_jwk(kid: &str, public_key: &[u8]) -> Result<shop_auth::Jwk, IdentityError> {
    let bytes: [u8; 32] = public_key
        .try_into()
        .map_err(|_| IdentityError::Crypto(format!("public key {kid} is not 32 bytes")))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|err| IdentityError::Crypto(format!("public key {kid}: {err}")))?;
    Ok(shop_auth::Jwk::from_verifying_key(kid, &key))
}
