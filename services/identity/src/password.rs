//! argon2id password hashing. CPU- and memory-heavy: callers run these through
//! [`crate::hashing::HashPool`], which bounds how many run at once.

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{
        PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString, rand_core::OsRng,
    },
};

use crate::error::IdentityError;

/// Memory one hash (or verification) holds while it runs, in KiB: argon2's recommended
/// 19 MiB. The one source for both the hashing parameters and the default number of hashes
/// allowed at once ([`crate::config::PasswordConfig::hash_concurrency`]).
pub const MEMORY_PER_HASH_KIB: u32 = Params::DEFAULT_M_COST;

fn argon2() -> Result<Argon2<'static>, IdentityError> {
    let params = Params::new(
        MEMORY_PER_HASH_KIB,
        Params::DEFAULT_T_COST,
        Params::DEFAULT_P_COST,
        None,
    )
    .map_err(|err| IdentityError::Crypto(err.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A PHC string (algorithm, parameters, salt, hash) for `password`.
pub fn hash(password: &str) -> Result<String, IdentityError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| IdentityError::Crypto(err.to_string()))
}

/// Whether `password` matches the PHC string `stored`.
pub fn verify(password: &str, stored: &str) -> Result<bool, IdentityError> {
    let parsed = PasswordHash::new(stored).map_err(|err| IdentityError::Crypto(err.to_string()))?;
    // Verification uses the parameters stored in the PHC string.
    match argon2()?.verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(err) => Err(IdentityError::Crypto(err.to_string())),
    }
}

/// Spends the time of one verification, for unknown emails, so response time does not tell
/// whether an account exists.
pub fn burn_verification(password: &str) {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Some(stored) = DUMMY.get_or_init(|| hash("not-a-real-password").ok()) {
        let _ = verify(password, stored);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_password() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse", &stored).unwrap());
        assert!(!verify("wrong horse", &stored).unwrap());
    }
}
