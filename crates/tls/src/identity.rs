//! Service identities in SPIFFE form: `spiffe://<trust domain>/ns/<namespace>/sa/<service>`.
//!
//! The same shape Kubernetes service accounts and sidecar meshes use, so a certificate issued
//! by cert-manager, by `meshctl up` or by a mesh's own CA names a caller the same way.

use std::fmt;

/// The trust domain of the shop's own certificates.
pub const DEFAULT_TRUST_DOMAIN: &str = "shop.local";

/// The namespace services run in (the Kubernetes namespace of `k8s/base`, and `meshctl up`'s).
pub const DEFAULT_NAMESPACE: &str = "shop";

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceIdentity {
    trust_domain: String,
    namespace: String,
    service: String,
}

/// A URI that is not a SPIFFE ID of the `ns/<namespace>/sa/<service>` form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service>")]
pub struct NotAServiceIdentity(pub String);

impl ServiceIdentity {
    /// `service` in `namespace` of `trust_domain`; each part must be a non-empty DNS-label-like
    /// string (lowercase letters, digits, `-`, `.` for the trust domain).
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service: &str,
    ) -> Result<Self, NotAServiceIdentity> {
        let id = Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service: service.to_owned(),
        };
        let valid = valid_part(trust_domain, true)
            && valid_part(namespace, false)
            && valid_part(service, false);
        if valid {
            Ok(id)
        } else {
            Err(NotAServiceIdentity(id.to_string()))
        }
    }

    /// `service` in the default namespace and trust domain.
    pub fn shop(service: &str) -> Result<Self, NotAServiceIdentity> {
        Self::new(DEFAULT_TRUST_DOMAIN, DEFAULT_NAMESPACE, service)
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<service>`.
    pub fn parse(uri: &str) -> Result<Self, NotAServiceIdentity> {
        let bad = || NotAServiceIdentity(uri.to_owned());
        let rest = uri.strip_prefix("spiffe://").ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        Self::new(td, ns, sa).map_err(|_| bad())
    }

    /// The trust domain.
    #[must_use]
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service (service account) name: what policies list as a caller.
    #[must_use]
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The same service name in another namespace and trust domain is another identity.
    #[must_use]
    pub fn with_service(&self, service: &str) -> Option<Self> {
        Self::new(&self.trust_domain, &self.namespace, service).ok()
    }
}

impl fmt::Display for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service
        )
    }
}

fn valid_part(part: &str, dots: bool) -> bool {
    !part.is_empty()
        && part.len() <= 253
        && part.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_uri() {
        let id = ServiceIdentity::shop("orders").unwrap();
        assert_eq!(id.to_string(), "spiffe://shop.local/ns/shop/sa/orders");
        assert_eq!(ServiceIdentity::parse(&id.to_string()).unwrap(), id);
        assert_eq!(id.service(), "orders");
        assert_eq!(
            id.with_service("catalog").unwrap().to_string(),
            "spiffe://shop.local/ns/shop/sa/catalog"
        );
    }

    #[test]
    fn refuses_anything_else() {
        for uri in [
            "https://shop.local/ns/shop/sa/orders",
            "spiffe://shop.local/ns/shop/sa/",
            "spiffe://shop.local/ns/shop/sa/orders/extra",
            "spiffe://shop.local/sa/orders/ns/shop",
            "spiffe://shop.local/ns/Shop/sa/orders",
            "spiffe:///ns/shop/sa/orders",
            "spiffe://shop.local/ns/shop/sa/or%2Fders",
            "spiffe://shop.local",
        ] {
            assert!(ServiceIdentity::parse(uri).is_err(), "{uri}");
        }
    }
}
