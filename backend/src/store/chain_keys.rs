//! The audit chain's keys, kept outside the database: a file (`CMEK_AUDIT_KEY_FILE`, default
//! `<CMEK_DATA_DIR>/audit-chain.keys`, mode 0600) with one key per line as 64 hex digits.
//! The last line seals new events; earlier lines only verify older ones, which is how a key
//! is rotated: append a line (`cmek-console audit rotate-key`), restart, and keep the old
//! lines for as long as their events should verify. Lines starting with `#` are comments.

use std::io::Write;
use std::path::Path;

use rand::RngCore;

use crate::crypto::keys::{Private, private_file};
use crate::domain::audit::{ChainKey, ChainKeys};

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("audit chain key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit chain key file {path}, line {line}: expected 64 hex digits")]
    Malformed { path: String, line: usize },
    #[error(
        "audit chain key file {path} is missing (CMEK_AUDIT_KEY_FILE): it is created by the first \
         `serve`; copy it from the instance that created it (every instance on one database \
         needs the same file)"
    )]
    Missing { path: String },
    #[error(
        "the audit log is sealed with chain key {id}, which {path} does not hold: give this \
         console the key file the other instances use (CMEK_AUDIT_KEY_FILE)"
    )]
    Foreign { path: String, id: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the keys; the file must exist. A file others can read is loaded but reported, since
/// whoever reads it can forge the chain.
pub fn load(path: &Path) -> Result<ChainKeys, KeyFileError> {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "the audit chain key file is readable by others; make it 0600"
            );
        }
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing {
                path: path.display().to_string(),
            });
        }
        Err(e) => return Err(io(path)(e)),
    };
    let mut keys = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || KeyFileError::Malformed {
            path: path.display().to_string(),
            line: number + 1,
        };
        let bytes = zeroize::Zeroizing::new(hex::decode(line).map_err(|_| malformed())?);
        let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
        keys.push(ChainKey::new(secret));
    }
    ChainKeys::new(keys).ok_or_else(|| KeyFileError::Malformed {
        path: path.display().to_string(),
        line: 0,
    })
}

/// Reads the keys, creating the file with one fresh key on first use.
pub fn load_or_create(path: &Path) -> Result<ChainKeys, KeyFileError> {
    if !path.exists() {
        append_new_key(path)?;
    }
    load(path)
}

/// Rotation: appends a fresh key to an existing file; it seals every event from the next
/// start on. Returns its id.
pub fn rotate(path: &Path) -> Result<String, KeyFileError> {
    load(path)?;
    append_new_key(path)
}

/// Appends a fresh key (creating the file, 0600, if needed); returns its id.
fn append_new_key(path: &Path) -> Result<String, KeyFileError> {
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(secret.as_mut());
    let line = zeroize::Zeroizing::new(format!("{}\n", hex::encode(secret.as_ref())));
    let mut file = private_file(Private::Append).open(path).map_err(io(path))?;
    file.write_all(line.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(ChainKey::new(*secret).id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_file_is_private_and_rotation_keeps_old_keys_for_verification() {
        let dir = std::env::temp_dir().join(format!("cmek-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit-chain.keys");

        let first = load_or_create(&path).unwrap();
        let first_id = first.current().id().to_owned();
        let second_id = rotate(&path).unwrap();
        let both = load(&path).unwrap();

        assert_eq!(both.current().id(), second_id);
        assert!(both.get(&first_id).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_needs_the_existing_file() {
        let path = std::env::temp_dir().join(format!("cmek-none-{}", uuid::Uuid::new_v4()));
        assert!(matches!(rotate(&path), Err(KeyFileError::Missing { .. })));
        assert!(!path.exists(), "no new key file in the wrong place");
    }

    #[test]
    fn a_missing_file_is_named_when_it_must_exist() {
        let path = std::env::temp_dir().join(format!("cmek-none-{}", uuid::Uuid::new_v4()));
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()));
    }
}
