//! Authorization by the policies the contracts declare (`shop.auth.v1.policy` on every RPC).
//!
//! [`PolicyTable`] reads the policy of every method the server serves from the descriptor set
//! at start-up, and [`GrpcServerBuilder::bind`](crate::GrpcServerBuilder::bind) fails when one
//! has none: a new RPC is closed until its contract says who may call it. [`AuthorizeLayer`]
//! then decides each call before it takes a rate-limit token or a concurrency slot:
//!
//! - a public RPC (Login, reading the catalog) admits everyone;
//! - a caller whose mutual-TLS certificate names a service in `callers`, in this server's own
//!   trust domain and namespace, is admitted;
//! - otherwise, when the policy admits end users, the call's `authorization: Bearer` token is
//!   verified ([`crate::user_tokens`]) and must grant the policy's scopes; the admitted user
//!   goes to the handler in the request's extensions ([`verified_user`]), which applies the
//!   owner rule ([`require_owner`]) where the policy says `USER_ACCESS_OWNER`;
//! - otherwise a call with no verified identity (or a refused token) is UNAUTHENTICATED and
//!   one with another identity is PERMISSION_DENIED, naming the method and the caller.
//!
//! The standard services: health is public (kubelet and load balancers probe it), reflection
//! needs a verified certificate (a service's, or the developer's that `meshctl up` issues).
//!
//! Enforcement needs identities, so it is on when the server knows its own: from its TLS
//! certificate, or under a sidecar mesh from its service account ([`crate::sidecar`]). A
//! plaintext server (tests, `meshctl up --plaintext`) still checks that every RPC has a policy
//! but admits every call, and says so at start-up.
//!

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{BoxFuture, Either};
use http::{Request, Response};
use prost_reflect::{DescriptorPool, Value};
use shop_auth::Claims;
use shop_tls::{PeerInfo, ServiceIdentity};
use tonic::{Status, body::Body};

use crate::user_tokens::UserTokens;

/// The extension every RPC of the contracts carries.
pub const POLICY_EXTENSION: &str = "shop.auth.v1.policy";

/// Which end users a policy admits (`shop.auth.v1.UserAccess`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAccess {
    /// No end user.
    None,
    /// Any user with a valid token.
    Any,
    /// A user, for their own resources.
    Owner,
}

/// Who may call one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Anyone may call.
    pub public: bool,
    /// Any verified service may call (reflection).
    pub any_service: bool,
    /// Services that may call on their own behalf.
    pub callers: Vec<String>,
    /// Which end users may call.
    pub user: UserAccess,
    /// Scopes a user's token must carry.
    pub scopes: Vec<String>,
}

impl Policy {
    fn public() -> Self {
        Self {
            public: true,
            any_service: false,
            callers: Vec::new(),
            user: UserAccess::None,
            scopes: Vec::new(),
        }
    }

    fn any_service() -> Self {
        Self {
            public: false,
            any_service: true,
            ..Self::public()
        }
    }
}

/// What the layer does with a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Admit,
    /// Not a listed service, but users may call: a valid user token decides.
    NeedsUserToken,
    /// No identity where one is needed.
    Unauthenticated,
    /// An identity the policy does not admit.
    Denied(String),
}

/// Why the policies could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The descriptor set does not decode or lacks the policy extension.
    #[error("{0}")]
    Descriptor(String),
    /// Served RPCs without a policy.
    #[error(
        "these RPCs declare no (shop.auth.v1.policy), so no caller could be admitted: {}; \
         add one to each in proto/",
        .0.join(", ")
    )]
    Missing(Vec<String>),
}

/// The policy of every method a server serves, by path (`/pkg.Service/Method`).
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    by_path: Arc<HashMap<String, Policy>>,
}

impl PolicyTable {
    /// Reads the policies of `services`' methods from `descriptor_set`; every method must have
    /// one. The standard services (health, reflection) get theirs here.
    pub fn new(descriptor_set: &[u8], services: &[String]) -> Result<Self, PolicyError> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|err| PolicyError::Descriptor(err.to_string()))?;
        let extension = pool
            .get_extension_by_name(POLICY_EXTENSION)
            .ok_or_else(|| {
                PolicyError::Descriptor(format!(
                    "the descriptor set has no {POLICY_EXTENSION} extension"
                ))
            })?;
        let mut by_path = HashMap::new();
        let mut missing = Vec::new();
        for name in services {
            let Some(service) = pool.get_service_by_name(name) else {
                missing.push(format!("{name} (not in the descriptor set)"));
                continue;
            };
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let options = method.options();
                if !options.has_extension(&extension) {
                    missing.push(path);
                    continue;
                }
                match policy_of(&options.get_extension(&extension)) {
                    Some(policy) => {
                        by_path.insert(path, policy);
                    }
                    None => missing.push(format!("{path} (unreadable policy)")),
                }
            }
        }
        if !missing.is_empty() {
            return Err(PolicyError::Missing(missing));
        }
        for method in ["Check", "Watch"] {
            by_path.insert(format!("/grpc.health.v1.Health/{method}"), Policy::public());
        }
        for version in ["v1", "v1alpha"] {
            by_path.insert(
                format!("/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"),
                Policy::any_service(),
            );
        }
        Ok(Self {
            by_path: Arc::new(by_path),
        })
    }

    /// The policy of the method at `path`.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&Policy> {
        self.by_path.get(path)
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::List(items)) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn policy_of(value: &Value) -> Option<Policy> {
    let message = value.as_message()?;
    let field = |name: &str| message.get_field_by_name(name);
    let user = match field("user").as_deref() {
        Some(Value::EnumNumber(1)) => UserAccess::Any,
        Some(Value::EnumNumber(2)) => UserAccess::Owner,
        Some(Value::EnumNumber(0)) | None => UserAccess::None,
        Some(_) => return None,
    };
    Some(Policy {
        public: field("public").as_deref().and_then(Value::as_bool) == Some(true),
        any_service: false,
        callers: strings(field("callers").as_deref()),
        user,
        scopes: strings(field("scopes").as_deref()),
    })
}

/// The decision for a call to a method with `policy` from `caller` (the verified identity of
/// its certificate), on a server whose own identity is `own`.
#[must_use]
pub fn decide(
    policy: &Policy,
    caller: Option<&ServiceIdentity>,
    own: Option<&ServiceIdentity>,
) -> Decision {
    if policy.public {
        return Decision::Admit;
    }
    // Only peers of this mesh: the same trust domain and namespace as the server.
    let caller = caller.filter(|caller| {
        own.is_none_or(|own| {
            caller.trust_domain() == own.trust_domain() && caller.namespace() == own.namespace()
        })
    });
    if let Some(caller) = caller
        && (policy.any_service || policy.callers.iter().any(|c| c == caller.service()))
    {
        return Decision::Admit;
    }
    if policy.user != UserAccess::None {
        return Decision::NeedsUserToken;
    }
    match caller {
        None => Decision::Unauthenticated,
        Some(caller) => Decision::Denied(caller.to_string()),
    }
}

/// Decides every call by its method's policy (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    table: PolicyTable,
    /// The server's own identity; `None` (plaintext) enforces nothing.
    own: Option<ServiceIdentity>,
    tokens: UserTokens,
}

impl AuthorizeLayer {
    /// Enforces `table` for a server whose certificate names `own`, verifying user tokens
    /// with `tokens`; `own: None` (a plaintext server) admits every call.
    #[must_use]
    pub fn new(table: PolicyTable, own: Option<ServiceIdentity>, tokens: UserTokens) -> Self {
        Self { table, own, tokens }
    }
}

impl<S> tower_layer::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
}

/// What the layer found out before the handler.
enum Verdict {
    Admit,
    Refuse(Status),
    /// Verify this bearer token, then check these scopes.
    VerifyToken {
        token: String,
        scopes: Vec<String>,
    },
}

impl<S> Authorize<S> {
    fn verdict(&self, request: &Request<Body>) -> Verdict {
        if self.layer.own.is_none() {
            return Verdict::Admit;
        }
        let path = request.uri().path();
        // Not a method of this server: tonic answers UNIMPLEMENTED.
        let Some(policy) = self.layer.table.get(path) else {
            return Verdict::Admit;
        };
        let caller = PeerInfo::of(request).and_then(|peer| peer.identity.as_ref());
        match decide(policy, caller, self.layer.own.as_ref()) {
            Decision::Admit => Verdict::Admit,
            Decision::NeedsUserToken => match bearer(request) {
                Ok(token) => Verdict::VerifyToken {
                    token: token.to_owned(),
                    scopes: policy.scopes.clone(),
                },
                Err(why) => Verdict::Refuse(Status::unauthenticated(format!(
                    "{path} needs a user token ({why}) or the certificate of a service its \
                     policy lists"
                ))),
            },
            Decision::Unauthenticated => Verdict::Refuse(Status::unauthenticated(format!(
                "{path} needs a client certificate of a service its policy lists"
            ))),
            Decision::Denied(caller) => Verdict::Refuse(Status::permission_denied(format!(
                "{caller} may not call {path}"
            ))),
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer<B>(request: &Request<B>) -> Result<&str, &'static str> {
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or("no authorization header")?
        .to_str()
        .map_err(|_| "malformed authorization header")?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or("authorization is not a bearer token")
}

/// The end user a call was admitted for, as its verified token says (in the request's
/// extensions when the layer admitted the call by a user token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedUser(pub Claims);

impl<S> tower_service::Service<Request<Body>> for Authorize<S>
where
    S: tower_service::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<
        std::future::Ready<Result<Response<Body>, S::Error>>,
        Either<S::Future, BoxFuture<'static, Result<Response<Body>, S::Error>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let (token, scopes) = match self.verdict(&request) {
            Verdict::Admit => return Either::Right(Either::Left(self.inner.call(request))),
            Verdict::Refuse(status) => {
                return Either::Left(std::future::ready(Ok(status.into_http())));
            }
            Verdict::VerifyToken { token, scopes } => (token, scopes),
        };
        // The clone that was polled ready serves this call; the fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let tokens = self.layer.tokens.clone();
        Either::Right(Either::Right(Box::pin(async move {
            let path = request.uri().path().to_owned();
            let claims = match tokens.verify(&token).await {
                Ok(claims) => claims,
                Err(error) => {
                    let status =
                        Status::unauthenticated(format!("{path}: user token refused: {error}"));
                    return Ok(status.into_http());
                }
            };
            if let Some(missing) = scopes.iter().find(|scope| !claims.has_scope(scope)) {
                let status = Status::permission_denied(format!(
                    "{path} needs the scope {missing:?}, which the token does not grant"
                ));
                return Ok(status.into_http());
            }
            // The user keys the rate limit below, not the address they call from.
            request
                .extensions_mut()
                .insert(shop_resilience::rate_limit::AuthenticatedCaller(format!(
                    "user:{}",
                    claims.sub
                )));
            request.extensions_mut().insert(VerifiedUser(claims));
            inner.call(request).await
        })))
    }
}

/// The verified end user of a call, when the call was admitted by a user token.
#[must_use]
pub fn verified_user<T>(request: &tonic::Request<T>) -> Option<&Claims> {
    request
        .extensions()
        .get::<VerifiedUser>()
        .map(|user| &user.0)
}

/// The owner rule of `USER_ACCESS_OWNER` RPCs: PERMISSION_DENIED when the call was admitted by
/// a user token whose subject is not `owner`. A call admitted as a listed service (acting on
/// its own behalf), or on a plaintext server that enforces nothing, passes.
pub fn require_owner<T>(
    request: &tonic::Request<T>,
    field: &str,
    owner: &str,
) -> Result<(), Status> {
    match verified_user(request) {
        Some(user) if user.sub != owner => Err(Status::permission_denied(format!(
            "{field}: the token's user may act only on its own resources"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(service: &str) -> ServiceIdentity {
        ServiceIdentity::shop(service).unwrap()
    }

    fn served() -> Vec<String> {
        [
            "shop.catalog.v1.CatalogService",
            "shop.identity.v1.IdentityService",
            "shop.inventory.v1.InventoryService",
            "shop.notifications.v1.NotificationService",
            "shop.orders.v1.OrderService",
            "shop.payments.v1.PaymentService",
            "shop.processor.v1.PaymentProcessorService",
            "shop.processor.v1.ProcessorAdminService",
            "shop.shipping.v1.ShippingService",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Every RPC of every service in `proto/` declares a policy: the table of all of them
    /// builds (it fails naming each RPC without one).
    #[test]
    fn every_rpc_of_the_contracts_has_a_policy() {
        let pool = DescriptorPool::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        let all: Vec<String> = pool
            .services()
            .map(|s| s.full_name().to_owned())
            .filter(|name| name.starts_with("shop."))
            .collect();
        let mut expected = served();
        expected.sort();
        let mut found = all.clone();
        found.sort();
        assert_eq!(found, expected, "a new service: add it to this test");
        let table = PolicyTable::new(shop_proto::FILE_DESCRIPTOR_SET, &all).unwrap();
        let reserve = table
            .get("/shop.inventory.v1.InventoryService/Reserve")
            .unwrap();
        assert_eq!(reserve.callers, ["orders"]);
        let create = table
            .get("/shop.catalog.v1.CatalogService/CreateProduct")
            .unwrap();
        assert_eq!(
            (create.user, create.scopes.as_slice()),
            (UserAccess::Any, ["catalog:write".to_owned()].as_slice())
        );
        assert!(
            table
                .get("/shop.identity.v1.IdentityService/Login")
                .unwrap()
                .public
        );
    }

    /// A served service whose RPCs have no policy fails, naming them.
    #[test]
    fn a_method_without_a_policy_is_refused_at_start() {
        use prost::Message as _;
        use prost_types::{
            FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let mut set = FileDescriptorSet::decode(shop_proto::FILE_DESCRIPTOR_SET).unwrap();
        set.file.push(FileDescriptorProto {
            name: Some("new/v1/new.proto".into()),
            package: Some("new.v1".into()),
            dependency: vec!["shop/catalog/v1/catalog_service.proto".into()],
            service: vec![ServiceDescriptorProto {
                name: Some("NewService".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("DoIt".into()),
                    input_type: Some(".shop.catalog.v1.GetProductRequest".into()),
                    output_type: Some(".shop.catalog.v1.GetProductResponse".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            syntax: Some("proto3".into()),
            ..Default::default()
        });
        let err =
            PolicyTable::new(&set.encode_to_vec(), &["new.v1.NewService".to_owned()]).unwrap_err();
        assert_eq!(
            err,
            PolicyError::Missing(vec!["/new.v1.NewService/DoIt".into()])
        );
        assert!(err.to_string().contains("/new.v1.NewService/DoIt"));
    }

    #[test]
    fn decisions() {
        let table = PolicyTable::new(shop_proto::FILE_DESCRIPTOR_SET, &served()).unwrap();
        let policy = |path: &str| table.get(path).unwrap().clone();
        let reserve = policy("/shop.inventory.v1.InventoryService/Reserve");
        let own = id("inventory");
        let orders = id("orders");
        assert_eq!(decide(&reserve, Some(&orders), Some(&own)), Decision::Admit);
        assert_eq!(
            decide(&reserve, Some(&id("shipping")), Some(&own)),
            Decision::Denied("spiffe://shop.local/ns/shop/sa/shipping".into())
        );
        assert_eq!(
            decide(&reserve, None, Some(&own)),
            Decision::Unauthenticated
        );
        // "orders" of another namespace or trust domain is not our orders.
        let elsewhere = ServiceIdentity::new("shop.local", "staging", "orders").unwrap();
        assert_eq!(
            decide(&reserve, Some(&elsewhere), Some(&own)),
            Decision::Unauthenticated
        );
        let foreign = ServiceIdentity::new("other.org", "shop", "orders").unwrap();
        assert_eq!(
            decide(&reserve, Some(&foreign), Some(&own)),
            Decision::Unauthenticated
        );

        let login = policy("/shop.identity.v1.IdentityService/Login");
        assert_eq!(decide(&login, None, Some(&own)), Decision::Admit);
        let health = policy("/grpc.health.v1.Health/Check");
        assert_eq!(decide(&health, None, Some(&own)), Decision::Admit);
        let reflection = policy("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
        assert_eq!(
            decide(&reflection, Some(&id("developer")), Some(&own)),
            Decision::Admit
        );
        assert_eq!(
            decide(&reflection, None, Some(&own)),
            Decision::Unauthenticated
        );
    }
}
