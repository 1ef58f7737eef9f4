//! The key-encryption key identity seals its signing keys with in the local mesh: 32 random
//! bytes, base64, made once in `<state dir>/identity.kek` (0600) so the keys sealed under it
//! open after a restart, and passed to identity as `SIGNING_KEY_KEK`.

use std::{io::Read as _, path::Path};

use base64::Engine as _;

use crate::error::{IoContext as _, MeshError, Result};

const KEK_FILE: &str = "identity.kek";

/// The key in `state_dir`, made first if there is none.
pub fn ensure(state_dir: &Path) -> Result<String> {
    let path = state_dir.join(KEK_FILE);
    if path.is_file() {
        let text = std::fs::read_to_string(&path).context(|| format!("read {}", path.display()))?;
        let text = text.trim().to_owned();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|_| MeshError::Kek(format!("{} is not base64", path.display())))?;
        if bytes.len() != 32 {
            return Err(MeshError::Kek(format!(
                "{} holds {} bytes, not 32: remove it and the identity database",
                path.display(),
                bytes.len()
            )));
        }
        return Ok(text);
    }
    let mut bytes = [0_u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context(|| "read /dev/urandom".to_owned())?;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    crate::certs::write_secret(&path, &format!("{text}\n"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path()).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&first)
                .unwrap()
                .len(),
            32
        );
        let mode = std::fs::metadata(dir.path().join(KEK_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ensure(dir.path()).unwrap(), first, "kept across starts");
        assert_ne!(ensure(tempfile::tempdir().unwrap().path()).unwrap(), first);
        std::fs::write(dir.path().join(KEK_FILE), "c2hvcnQ=").unwrap();
        assert!(ensure(dir.path()).is_err(), "a short key is refused");
    }
}
