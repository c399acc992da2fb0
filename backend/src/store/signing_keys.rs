//! The audit log's signing keys (format 2, Ed25519), kept outside the database: a file
//! (`CMEK_AUDIT_SIGNING_KEY_FILE`, default `<CMEK_DATA_DIR>/audit-signing.keys`, mode 0600)
//! with one key per line, `<valid from, RFC 3339> <64 hex digits of its seed>`, oldest first.
//! Each key signs from its time until the next key's, when it retires and signs nothing
//! more. `cmek-console audit rotate-key [--in 5m]` appends a line, valid from now or later;
//! running consoles read the file again every 10 s (`reload`), so every instance holds the
//! new key before its time. Keep the old lines, so the keys can still be published for the
//! events they signed. Lines starting with `#` are comments.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::crypto::audit_chain::{SigningKey, SigningKeyRing, SigningKeys};
use crate::crypto::keys::{Private, private_file};

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyFileError {
    #[error("audit signing key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "audit signing key file {path}, line {line}: expected `<valid from, RFC 3339> <64 hex digits>`, oldest first"
    )]
    Malformed { path: String, line: usize },
    #[error(
        "audit signing key file {path}: its newest key is valid from {from}, so a new key cannot start at {now} (a rotation is already scheduled after that time, or the clock went back)"
    )]
    NotAfter {
        path: String,
        from: String,
        now: String,
    },
    #[error(
        "audit signing key file {path} no longer holds every key this console holds (a line was removed or changed); the console keeps signing with the keys it had: put the earlier lines back, a rotation only appends"
    )]
    NotAnExtension { path: String },
}

/// Reads the file again and takes its keys if it grew (a rotation, scheduled ahead by
/// `audit rotate-key --in`): the keys added (id and valid from), none when it did not grow.
/// A file that lost or changed a key this console holds is refused, and the console keeps
/// the keys it had.
pub fn reload(
    path: &Path,
    ring: &SigningKeyRing,
) -> Result<Vec<(String, DateTime<Utc>)>, SigningKeyFileError> {
    let keys = load(path)?;
    let held = ring.get();
    let added: Vec<(String, DateTime<Utc>)> = keys
        .published()
        .into_iter()
        .skip(held.len())
        .filter_map(|k| {
            let from = DateTime::parse_from_rfc3339(&k.valid_from).ok()?;
            Some((k.key_id, from.with_timezone(&Utc)))
        })
        .collect();
    if (added.is_empty() && keys.extends(&held)) || ring.replace(keys) {
        return Ok(added);
    }
    Err(SigningKeyFileError::NotAnExtension {
        path: path.display().to_string(),
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SigningKeyFileError + '_ {
    move |source| SigningKeyFileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Reads the keys; a missing file is no keys.
pub fn load(path: &Path) -> Result<SigningKeys, SigningKeyFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => zeroize::Zeroizing::new(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SigningKeys::none()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut keys: Vec<(DateTime<Utc>, SigningKey)> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || SigningKeyFileError::Malformed {
            path: path.display().to_string(),
            line: number + 1,
        };
        let (from, seed) = line.split_once(' ').ok_or_else(malformed)?;
        let from = DateTime::parse_from_rfc3339(from)
            .map_err(|_| malformed())?
            .with_timezone(&Utc);
        if keys.last().is_some_and(|(previous, _)| *previous >= from) {
            return Err(malformed());
        }
        let bytes = zeroize::Zeroizing::new(hex::decode(seed.trim()).map_err(|_| malformed())?);
        let seed: &[u8; 32] = bytes.as_slice().try_into().map_err(|_| malformed())?;
        keys.push((from, SigningKey::from_seed(seed).ok_or_else(malformed)?));
    }
    Ok(SigningKeys::new(keys))
}

/// Reads the keys, making the file with one fresh key, valid from `now`, on first use.
pub fn load_or_create(path: &Path, now: DateTime<Utc>) -> Result<SigningKeys, SigningKeyFileError> {
    let keys = load(path)?;
    if keys.current().is_some() {
        return Ok(keys);
    }
    append_new_key(path, now)?;
    load(path)
}

/// Rotation: a fresh key valid from `now`, which retires the one before it. Its id. Two
/// rotations at once run one after the other (a lock on the file), so the second sees the
/// first's key and cannot append one dated before it.
pub fn rotate(path: &Path, now: DateTime<Utc>) -> Result<String, SigningKeyFileError> {
    let mut file = private_file(Private::Append).open(path).map_err(io(path))?;
    file.lock().map_err(io(path))?;
    if let Some(from) = load(path)?.newest_from()
        && from >= now
    {
        return Err(SigningKeyFileError::NotAfter {
            path: path.display().to_string(),
            from: from.to_rfc3339(),
            now: now.to_rfc3339(),
        });
    }
    append_key_to(&mut file, path, now)
}

fn append_new_key(path: &Path, now: DateTime<Utc>) -> Result<String, SigningKeyFileError> {
    let mut file = private_file(Private::Append).open(path).map_err(io(path))?;
    append_key_to(&mut file, path, now)
}

fn append_key_to(
    file: &mut std::fs::File,
    path: &Path,
    now: DateTime<Utc>,
) -> Result<String, SigningKeyFileError> {
    let seed = crate::crypto::keys::random::<32>();
    let key = SigningKey::from_seed(&seed).ok_or_else(|| SigningKeyFileError::Malformed {
        path: path.display().to_string(),
        line: 0,
    })?;
    let line = zeroize::Zeroizing::new(format!(
        "{} {}\n",
        crate::crypto::audit_chain::time_text(now),
        hex::encode(seed.as_ref())
    ));
    file.write_all(line.as_bytes()).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(key.id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own with the key file's path in it (no file yet), and a fixed time.
    fn scratch() -> (std::path::PathBuf, std::path::PathBuf, DateTime<Utc>) {
        let dir = std::env::temp_dir().join(format!("cmek-signing-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit-signing.keys");
        let t0 = DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        (dir, path, t0)
    }

    #[test]
    fn a_rotation_retires_the_key_before_it_when_the_new_one_starts() {
        let (dir, path, t0) = scratch();
        assert!(
            load(&path).unwrap().published().is_empty(),
            "no file, no keys"
        );
        let first = load_or_create(&path, t0).unwrap();
        let first_id = first.current().unwrap().id().to_owned();
        assert_eq!(
            load_or_create(&path, t0).unwrap().published().len(),
            1,
            "made once"
        );
        let t1 = t0 + chrono::Duration::hours(1);
        let second_id = rotate(&path, t1).unwrap();
        let published = load(&path).unwrap().published();
        assert_eq!(published.len(), 2);
        assert_eq!(published[0].key_id, first_id);
        assert_eq!(
            published[0].retired_at.as_deref(),
            Some("2026-12-07T11:00:00.000000Z")
        );
        assert_eq!(published[1].key_id, second_id);
        assert_eq!(published[1].valid_from, "2026-12-07T11:00:00.000000Z");
        assert_eq!(published[1].retired_at, None);
        // A rotation dated before the newest key is refused (a clock gone back).
        assert!(matches!(
            rotate(&path, t0),
            Err(SigningKeyFileError::NotAfter { .. })
        ));
        assert_eq!(load(&path).unwrap().published().len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_key_signs_from_its_time_and_a_reload_takes_only_a_file_that_grew() {
        let (dir, path, t0) = scratch();
        let ring = SigningKeyRing::new(load_or_create(&path, t0).unwrap());
        let first = ring.get().current().unwrap().id().to_owned();
        // Scheduled an hour ahead.
        let t1 = t0 + chrono::Duration::hours(1);
        let second = rotate(&path, t1).unwrap();
        let added = reload(&path, &ring).unwrap();
        assert_eq!(added, vec![(second.clone(), t1)]);
        assert!(reload(&path, &ring).unwrap().is_empty());
        let keys = ring.get();
        let at = |t| keys.signer_at(t).map(|(k, at)| (k.id().to_owned(), at));
        // Before the first key: the first key, at its own time.
        assert_eq!(
            at(t0 - chrono::Duration::seconds(1)),
            Some((first.clone(), t0))
        );
        let before = t1 - chrono::Duration::microseconds(1);
        assert_eq!(at(before), Some((first.clone(), before)));
        assert_eq!(at(t1), Some((second.clone(), t1)));
        // A file that lost its first key, or whose key changed, is refused; nothing changes.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n", lines[1])).unwrap();
        assert!(matches!(
            reload(&path, &ring),
            Err(SigningKeyFileError::NotAnExtension { .. })
        ));
        let changed = format!(
            "{}\n{} {}\n",
            lines[0],
            lines[1].split(' ').next().unwrap(),
            "11".repeat(32)
        );
        std::fs::write(&path, changed).unwrap();
        assert!(reload(&path, &ring).is_err());
        assert_eq!(ring.get().current().unwrap().id(), second);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotations_at_once_run_one_after_the_other_and_leave_a_file_that_loads() {
        let (dir, path, t0) = scratch();
        load_or_create(&path, t0).unwrap();
        let at = t0 + chrono::Duration::hours(1);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| rotate(&path, at).is_ok()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|ok| **ok).count(), 1, "{results:?}");
        assert_eq!(load(&path).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
