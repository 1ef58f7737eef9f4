//! Peer identity from a sidecar mesh (Linkerd) instead of our own mutual TLS.
//!
//! Under Linkerd every connection to the pod goes through its proxy, which terminates the
//! mesh's mutual TLS and, on each request it forwards, sets `l5d-client-id` to the client's
//! verified identity, `<service account>.<namespace>.serviceaccount.identity.<control plane
//! namespace>.<trust domain>`, or removes the header when the client is not meshed (so a
//! client cannot write it itself). With `PEER_IDENTITY=linkerd` the server reads the caller's
//! identity from that header into [`PeerInfo`], where the policy layer and the rate limits
//! find it, exactly as they find a certificate's identity: the policies stay enforced though
//! our own TLS is off. The header is then removed, so no handler sees it.
//!
//! The header is a fact only because the proxy is the sole way in; the Linkerd component of
//! `k8s/` keeps the gRPC port out of `skip-inbound-ports`. Outside a mesh the setting would
//! let any client name itself, so it refuses to start when TLS files are also configured.
//!
//! Written here because it is a header rewrite of a few lines on top of the kit's own
//! [`PeerInfo`]; no crate models Linkerd's identity header.

use std::task::{Context, Poll};

use http::{HeaderName, Request};
use shop_tls::{PeerInfo, ServiceIdentity};

/// The header Linkerd's inbound proxy sets to the client's identity.
pub const LINKERD_CLIENT_ID: HeaderName = HeaderName::from_static("l5d-client-id");

/// How Linkerd names workloads: `<sa>.<ns>.<suffix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkerdNames {
    /// `serviceaccount.identity.<control plane namespace>.<trust domain>`.
    suffix: String,
    /// What the identities read from the header are given as trust domain: the suffix after
    /// `serviceaccount.identity.`, so two meshes with different roots never match.
    trust_domain: String,
}

/// Why [`LinkerdNames::new`] refused a suffix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Linkerd identity suffix (serviceaccount.identity.<control plane namespace>.<trust domain>)"
)]
pub struct NotALinkerdSuffix(pub String);

impl LinkerdNames {
    /// The names under `suffix`, e.g. `serviceaccount.identity.linkerd.cluster.local`.
    pub fn new(suffix: &str) -> Result<Self, NotALinkerdSuffix> {
        let suffix = suffix.trim_matches('.');
        let trust_domain = suffix
            .strip_prefix("serviceaccount.identity.")
            .filter(|rest| !rest.is_empty())
            .ok_or_else(|| NotALinkerdSuffix(suffix.to_owned()))?;
        // The trust domain must be one a ServiceIdentity accepts.
        ServiceIdentity::new(trust_domain, "ns", "sa")
            .map_err(|_| NotALinkerdSuffix(suffix.to_owned()))?;
        Ok(Self {
            suffix: suffix.to_owned(),
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// The identity of the workload running as `service_account` in `namespace`.
    pub fn workload(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<ServiceIdentity, shop_tls::NotAServiceIdentity> {
        ServiceIdentity::new(&self.trust_domain, namespace, service_account)
    }

    /// The identity a `l5d-client-id` value names, if it is one of this mesh's.
    #[must_use]
    pub fn parse(&self, client_id: &str) -> Option<ServiceIdentity> {
        let workload = client_id.strip_suffix(&self.suffix)?.strip_suffix('.')?;
        let (service_account, namespace) = workload.split_once('.')?;
        if namespace.contains('.') {
            return None;
        }
        self.workload(namespace, service_account).ok()
    }
}

/// Reads the caller's identity from `l5d-client-id` into [`PeerInfo`] (see the module docs).
#[derive(Debug, Clone)]
pub struct LinkerdPeerLayer {
    names: LinkerdNames,
}

impl LinkerdPeerLayer {
    /// The layer for a mesh naming workloads with `names`.
    #[must_use]
    pub fn new(names: LinkerdNames) -> Self {
        Self { names }
    }
}

impl<S> tower::Layer<S> for LinkerdPeerLayer {
    type Service = LinkerdPeer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LinkerdPeer {
            inner,
            names: self.names.clone(),
        }
    }
}

/// The service of [`LinkerdPeerLayer`].
#[derive(Debug, Clone)]
pub struct LinkerdPeer<S> {
    inner: S,
    names: LinkerdNames,
}

impl<S, B> tower_service::Service<Request<B>> for LinkerdPeer<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let identity = request
            .headers_mut()
            .remove(LINKERD_CLIENT_ID)
            .and_then(|value| value.to_str().ok().and_then(|id| self.names.parse(id)));
        let mut peer = PeerInfo::of(&request).cloned().unwrap_or(PeerInfo {
            remote_addr: None,
            tls: false,
            identity: None,
        });
        // The proxy's mutual TLS, not ours: the listener saw a plaintext local connection.
        peer.tls = identity.is_some();
        peer.identity = identity;
        request.extensions_mut().insert(peer);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names() -> LinkerdNames {
        LinkerdNames::new("serviceaccount.identity.linkerd.cluster.local").unwrap()
    }

    #[test]
    fn a_client_id_names_its_service_account_and_namespace() {
        let id = names()
            .parse("payments.shop.serviceaccount.identity.linkerd.cluster.local")
            .unwrap();
        assert_eq!(id, names().workload("shop", "payments").unwrap());
        assert_eq!(id.service(), "payments");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.trust_domain(), "linkerd.cluster.local");
    }

    #[test]
    fn other_meshes_and_malformed_ids_name_nobody() {
        for id in [
            "",
            "payments",
            "payments.shop",
            "serviceaccount.identity.linkerd.cluster.local",
            ".shop.serviceaccount.identity.linkerd.cluster.local",
            "payments..serviceaccount.identity.linkerd.cluster.local",
            "a.b.shop.serviceaccount.identity.linkerd.cluster.local",
            "payments.shop.serviceaccount.identity.linkerd.other.local",
            "payments.shopserviceaccount.identity.linkerd.cluster.local",
            "payments.shop.serviceaccount.identity.linkerd.cluster.local.evil",
            "Payments!.shop.serviceaccount.identity.linkerd.cluster.local",
        ] {
            assert_eq!(names().parse(id), None, "{id:?}");
        }
    }

    #[test]
    fn suffixes_must_be_linkerds() {
        assert!(LinkerdNames::new("cluster.local").is_err());
        assert!(LinkerdNames::new("serviceaccount.identity.").is_err());
        assert_eq!(
            LinkerdNames::new(".serviceaccount.identity.linkerd.cluster.local.").unwrap(),
            names()
        );
    }
}
