//! The identity service's settings.

use std::time::Duration;

use shop_runtime::{DatabaseConfig, NatsConfig, RuntimeError, ServerConfig, TelemetryConfig};

use crate::{kek::Kek, password::MEMORY_PER_HASH_KIB};

/// Everything the identity service reads at start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "identity", about = "The shop's identity service (gRPC)")]
pub struct Config {
    /// Listeners and shutdown.
    #[command(flatten)]
    pub server: ServerConfig,
    /// The identity database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Where events go (through the outbox).
    #[command(flatten)]
    pub nats: NatsConfig,
    /// Logging.
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
    /// Tokens.
    #[command(flatten)]
    pub tokens: TokenConfig,
    /// Password hashing and login throttling.
    #[command(flatten)]
    pub passwords: PasswordConfig,
}

/// How long access tokens live (their `iss` and `aud` are the kit's `JWT_ISSUER` and
/// `JWT_AUDIENCE`, the same every verifier checks).
#[derive(Debug, Clone, clap::Args)]
pub struct TokenConfig {
    /// Lifetime of an access token in seconds.
    #[arg(long, env = "JWT_TTL_SECS", default_value_t = 3600)]
    pub jwt_ttl_secs: u64,
    /// Emails of the users whose tokens grant the admin scopes (`catalog:write
    /// inventory:write`), comma-separated.
    #[arg(long, env = "ADMIN_EMAILS", value_delimiter = ',')]
    pub admin_emails: Vec<String>,
    /// Key-encryption key that seals the signing keys in the database: base64 of 32 random
    /// bytes (`head -c32 /dev/urandom | base64`), from a secret. Unset, signing keys are
    /// stored in clear and a warning says so at start.
    #[arg(long, env = "SIGNING_KEY_KEK", hide_env_values = true)]
    pub signing_key_kek: Option<Kek>,
    /// Earlier key-encryption keys, comma-separated: keys sealed by them are opened and
    /// resealed under SIGNING_KEY_KEK at start (rotation of the key-encryption key).
    #[arg(
        long,
        env = "SIGNING_KEY_PREVIOUS_KEKS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub signing_key_previous_keks: Vec<Kek>,
    /// Seconds between re-reads of the signing keys, so every replica signs with the newest
    /// key soon after a rotation and retires replaced keys.
    #[arg(long, env = "SIGNING_KEY_REFRESH_SECS", default_value_t = DEFAULT_KEY_REFRESH_SECS)]
    pub signing_key_refresh_secs: u64,
    /// Seconds a replaced key stays published after the last token it can have signed
    /// expires: at least the verifiers' clock-skew leeway (30 s).
    #[arg(long, env = "SIGNING_KEY_GRACE_SECS", default_value_t = DEFAULT_KEY_GRACE_SECS)]
    pub signing_key_grace_secs: u64,
}

/// Default of `SIGNING_KEY_REFRESH_SECS`.
pub const DEFAULT_KEY_REFRESH_SECS: u64 = 30;
/// Default of `SIGNING_KEY_GRACE_SECS`.
pub const DEFAULT_KEY_GRACE_SECS: u64 = 60;

impl TokenConfig {
    /// How long after a rotation the replaced keys must stay published: a replica may sign
    /// with one until its next refresh, the token lives its lifetime, verifiers allow skew.
    #[must_use]
    pub fn replaced_key_lifetime(&self) -> Duration {
        Duration::from_secs(
            self.jwt_ttl_secs
                .saturating_add(self.signing_key_refresh_secs)
                .saturating_add(self.signing_key_grace_secs),
        )
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        if self.jwt_ttl_secs == 0 || self.signing_key_refresh_secs == 0 {
            return Err(RuntimeError::Config(
                "JWT_TTL_SECS and SIGNING_KEY_REFRESH_SECS must be greater than zero".into(),
            ));
        }
        if self.signing_key_kek.is_none() && !self.signing_key_previous_keks.is_empty() {
            return Err(RuntimeError::Config(
                "SIGNING_KEY_PREVIOUS_KEKS needs SIGNING_KEY_KEK: previous keys are only \
                 used to reseal under the current one"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The scopes an admin's token grants: catalog and inventory writes.
pub const ADMIN_SCOPES: &str = "catalog:write inventory:write";

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            jwt_ttl_secs: 3600,
            admin_emails: Vec::new(),
            signing_key_kek: None,
            signing_key_previous_keks: Vec::new(),
            signing_key_refresh_secs: DEFAULT_KEY_REFRESH_SECS,
            signing_key_grace_secs: DEFAULT_KEY_GRACE_SECS,
        }
    }
}

/// Default of `PASSWORD_HASH_MEMORY_MIB`: a quarter of identity's 512 MiB pod limit.
pub const DEFAULT_HASH_MEMORY_MIB: u32 = 128;
/// Default of `PASSWORD_HASH_WAIT_MS`.
pub const DEFAULT_HASH_WAIT_MS: u64 = 200;
/// Default of `LOGIN_FAILURES_PER_ACCOUNT`.
pub const DEFAULT_FAILURES_PER_ACCOUNT: u32 = 5;
/// Default of `LOGIN_ACCOUNT_FORGIVE_SECS`.
pub const DEFAULT_ACCOUNT_FORGIVE_SECS: u64 = 60;
/// Default of `LOGIN_FAILURES_PER_PEER`.
pub const DEFAULT_FAILURES_PER_PEER: u32 = 30;
/// Default of `LOGIN_PEER_FORGIVE_SECS`.
pub const DEFAULT_PEER_FORGIVE_SECS: u64 = 2;

/// How much argon2 work runs at once, and how failed logins are throttled.
#[derive(Debug, Clone, clap::Args)]
pub struct PasswordConfig {
    /// Memory argon2 may hold for hashes running at once, in MiB. Unless
    /// PASSWORD_HASH_CONCURRENCY is set, it decides how many run at once (19 MiB each).
    #[arg(long, env = "PASSWORD_HASH_MEMORY_MIB", default_value_t = DEFAULT_HASH_MEMORY_MIB)]
    pub password_hash_memory_mib: u32,
    /// Hashes (Register) and verifications (Login) running at once; default from
    /// PASSWORD_HASH_MEMORY_MIB.
    #[arg(long, env = "PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<usize>,
    /// How long a call waits for a hashing slot before RESOURCE_EXHAUSTED, in milliseconds.
    #[arg(long, env = "PASSWORD_HASH_WAIT_MS", default_value_t = DEFAULT_HASH_WAIT_MS)]
    pub password_hash_wait_ms: u64,
    /// Failed logins one account may have in a burst before its logins are refused.
    #[arg(long, env = "LOGIN_FAILURES_PER_ACCOUNT", default_value_t = DEFAULT_FAILURES_PER_ACCOUNT)]
    pub login_failures_per_account: u32,
    /// Seconds after which one failed login of an account is forgiven.
    #[arg(long, env = "LOGIN_ACCOUNT_FORGIVE_SECS", default_value_t = DEFAULT_ACCOUNT_FORGIVE_SECS)]
    pub login_account_forgive_secs: u64,
    /// Failed logins one peer (IP address) may have in a burst, over all accounts.
    #[arg(long, env = "LOGIN_FAILURES_PER_PEER", default_value_t = DEFAULT_FAILURES_PER_PEER)]
    pub login_failures_per_peer: u32,
    /// Seconds after which one failed login of a peer is forgiven.
    #[arg(long, env = "LOGIN_PEER_FORGIVE_SECS", default_value_t = DEFAULT_PEER_FORGIVE_SECS)]
    pub login_peer_forgive_secs: u64,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            password_hash_memory_mib: DEFAULT_HASH_MEMORY_MIB,
            password_hash_concurrency: None,
            password_hash_wait_ms: DEFAULT_HASH_WAIT_MS,
            login_failures_per_account: DEFAULT_FAILURES_PER_ACCOUNT,
            login_account_forgive_secs: DEFAULT_ACCOUNT_FORGIVE_SECS,
            login_failures_per_peer: DEFAULT_FAILURES_PER_PEER,
            login_peer_forgive_secs: DEFAULT_PEER_FORGIVE_SECS,
        }
    }
}

impl PasswordConfig {
    /// Hashes allowed at once: the configured number, else as many as fit the memory
    /// budget (at least one).
    #[must_use]
    pub fn hash_concurrency(&self) -> usize {
        self.password_hash_concurrency.unwrap_or_else(|| {
            let fit = self.password_hash_memory_mib.saturating_mul(1024) / MEMORY_PER_HASH_KIB;
            usize::try_from(fit).unwrap_or(usize::MAX).max(1)
        })
    }

    /// How long a call waits for a hashing slot.
    #[must_use]
    pub fn hash_wait(&self) -> Duration {
        Duration::from_millis(self.password_hash_wait_ms)
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let bad = |what: &str| {
            Err(RuntimeError::Config(format!(
                "{what} must be greater than zero"
            )))
        };
        if self.password_hash_concurrency == Some(0) {
            return bad("PASSWORD_HASH_CONCURRENCY");
        }
        if self.login_failures_per_account == 0 || self.login_failures_per_peer == 0 {
            return bad("LOGIN_FAILURES_PER_ACCOUNT and LOGIN_FAILURES_PER_PEER");
        }
        if self.login_account_forgive_secs == 0 || self.login_peer_forgive_secs == 0 {
            return bad("LOGIN_ACCOUNT_FORGIVE_SECS and LOGIN_PEER_FORGIVE_SECS");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_concurrency_is_what_the_memory_budget_holds() {
        // 128 MiB of 19 MiB hashes.
        assert_eq!(PasswordConfig::default().hash_concurrency(), 6);
        let tiny = PasswordConfig {
            password_hash_memory_mib: 1,
            ..PasswordConfig::default()
        };
        assert_eq!(tiny.hash_concurrency(), 1);
        let set = PasswordConfig {
            password_hash_concurrency: Some(3),
            ..PasswordConfig::default()
        };
        assert_eq!(set.hash_concurrency(), 3);
    }
}
