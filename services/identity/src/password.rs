//! argon2id password hashing. CPU-heavy: callers run these on the blocking pool.

use argon2::{
    Argon2,
    password_hash::{
        PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString, rand_core::OsRng,
    },
};

use crate::error::IdentityError;

/// A PHC string (algorithm, parameters, salt, hash) for `password`.
pub fn hash(password: &str) -> Result<String, IdentityError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| IdentityError::Crypto(err.to_string()))
}

/// Whether `password` matches the PHC string `stored`.
pub fn verify(password: &str, stored: &str) -> Result<bool, IdentityError> {
    let parsed = PasswordHash::new(stored).map_err(|err| IdentityError::Crypto(err.to_string()))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
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
