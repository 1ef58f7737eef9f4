//! Bearer tokens: any string verifies or fails with a `JwtError`, never a panic; a token signed
//! by a trusted key but carrying arbitrary header and claims JSON reaches every claim check.

use std::time::Duration;

use arbitrary::Unstructured;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer as _, SigningKey};
use shop_auth::{JwtSigner, JwtVerifier};

const ISSUER: &str = "shop-identity";
const AUDIENCE: &str = "shop";
const KID: &str = "fuzz";
const SEED: [u8; 32] = [7; 32];

fn verifier() -> Option<JwtVerifier> {
    let signer = JwtSigner::new(
        KID.to_owned(),
        SigningKey::from_bytes(&SEED),
        ISSUER.to_owned(),
        AUDIENCE.to_owned(),
        Duration::from_secs(600),
    );
    JwtVerifier::new(&[signer.jwk()], ISSUER.to_owned(), AUDIENCE.to_owned()).ok()
}

/// Verifies a token built from `data`: either the raw bytes, or arbitrary header and claims
/// JSON signed with the trusted key (so the signature check passes and parsing goes on).
pub fn verify(data: &[u8]) {
    let Some(verifier) = verifier() else {
        panic!("the fuzz key must make a verifier");
    };
    let mut input = Unstructured::new(data);
    let signed = input.arbitrary::<bool>().unwrap_or(false);
    if !signed {
        let token = String::from_utf8_lossy(input.take_rest());
        // Random bytes cannot carry a valid Ed25519 signature of the trusted key.
        assert!(verifier.verify(&token).is_err(), "{token:?} verified");
        return;
    }
    let header = json_part(&mut input, r#"{"alg":"EdDSA","typ":"JWT","kid":"fuzz"}"#);
    let claims = json_part(&mut input, "");
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.as_bytes()),
        URL_SAFE_NO_PAD.encode(claims.as_bytes())
    );
    let signature = SigningKey::from_bytes(&SEED).sign(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    );
    if let Ok(verified) = verifier.verify(&token) {
        // Whatever passed must have passed every check on the claims.
        assert_eq!(verified.iss, ISSUER);
        assert_eq!(verified.aud, AUDIENCE);
    }
}

/// JSON text for one token part: usually an object with the claims a verifier reads and values
/// of arbitrary type, sometimes arbitrary text.
fn json_part(input: &mut Unstructured<'_>, usual: &str) -> String {
    match input.int_in_range(0..=3u8).unwrap_or(0) {
        0 if !usual.is_empty() => usual.to_owned(),
        1 => input.arbitrary::<String>().unwrap_or_default(),
        _ => {
            let keys = [
                "alg", "kid", "typ", "sub", "iss", "aud", "exp", "nbf", "iat", "email", "jti",
            ];
            let mut fields = Vec::new();
            while let Ok(true) = input.arbitrary::<bool>() {
                let key = keys[usize::from(input.arbitrary::<u8>().unwrap_or(0)) % keys.len()];
                fields.push(format!("\"{key}\":{}", json_value(input, key)));
            }
            format!("{{{}}}", fields.join(","))
        }
    }
}

fn json_value(input: &mut Unstructured<'_>, key: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match input.int_in_range(0..=7u8).unwrap_or(0) {
        0 => match key {
            "iss" => format!("\"{ISSUER}\""),
            "aud" => format!("\"{AUDIENCE}\""),
            "alg" => "\"EdDSA\"".to_owned(),
            "kid" => format!("\"{KID}\""),
            "exp" => (now + 60).to_string(),
            _ => now.to_string(),
        },
        1 => input.arbitrary::<u64>().unwrap_or(0).to_string(),
        2 => input.arbitrary::<i64>().unwrap_or(0).to_string(),
        3 => format!("{:?}", input.arbitrary::<f64>().unwrap_or(0.0)).replace("NaN", "1e999"),
        4 => "null".to_owned(),
        5 => "[1,\"a\",{}]".to_owned(),
        6 => "true".to_owned(),
        _ => serde_string(&input.arbitrary::<String>().unwrap_or_default()),
    }
}

fn serde_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}
