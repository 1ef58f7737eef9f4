//! `meshctl rotate-signing-key`: identity's `RotateSigningKey` with the developer's
//! certificate (the only caller its policy lists), and what it did.

use std::path::Path;

use shop_proto::identity::{
    RotateSigningKeyRequest, identity_service_client::IdentityServiceClient,
};

use crate::error::{MeshError, Result};
use crate::state::MeshState;

/// Rotates identity's signing key in the mesh recorded in `state_dir`.
pub async fn rotate(state_dir: &Path) -> Result<()> {
    let state = MeshState::running(state_dir)?;
    let rotation = IdentityServiceClient::new(state.channel("identity")?)
        .rotate_signing_key(RotateSigningKeyRequest {})
        .await
        .map_err(|s| MeshError::rpc("IdentityService/RotateSigningKey", s))?
        .into_inner();
    println!("new signing key: {}", rotation.kid);
    println!("published keys:  {}", rotation.published_kids.join(", "));
    if let Some(at) = rotation.replaced_keys_retire_at {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let when = format!("{} s from now", at.seconds.saturating_sub(now).max(0));
        println!(
            "replaced keys stay published (tokens they signed still verify) until {when}, \
             then are retired"
        );
    }
    Ok(())
}
