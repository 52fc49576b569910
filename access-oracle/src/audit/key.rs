//! The chain's secret key: read from its file, or created there (random, mode 0600) the
//! first time the trail is opened for writing.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The shortest key accepted, in bytes (HMAC-SHA256's own output size).
pub const MIN_KEY_BYTES: usize = 32;

/// The longest key file read, in bytes: a key is 32 random bytes; anything near this size
/// is a wrong path, not a key.
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

const KEY_LIMIT: crate::files::Limit = crate::files::Limit {
    what: "the audit key",
    max_bytes: MAX_KEY_FILE_BYTES,
    why: "a key is 32 bytes",
};

/// Reads the key; a missing, short, world-readable or world-writable key file, or one that
/// is not a regular file, is an error that says so. `serve` and `check-config` both read
/// it through here.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read the audit key {}: {e}", path.display()))?;
    if meta.is_file() && meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "the audit key {} is readable by everyone; refusing it (chmod o-r)",
            path.display()
        ));
    }
    let (key, _) = crate::files::read_bounded(path, KEY_LIMIT)
        .map_err(|e| format!("cannot read the audit key {}: {e}", path.display()))?;
    if key.len() < MIN_KEY_BYTES {
        return Err(format!(
            "the audit key {} has {} bytes; it needs at least {MIN_KEY_BYTES}",
            path.display(),
            key.len()
        ));
    }
    Ok(key)
}

/// Reads the key, creating it first when the file does not exist.
pub fn read_or_create(path: &Path) -> Result<Vec<u8>, String> {
    if !path.exists() {
        create(path)?;
    }
    read(path)
}

fn create(path: &Path) -> Result<(), String> {
    let mut key = [0u8; MIN_KEY_BYTES];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for the audit key: {e}"))?;
    if let Some(dir) = path.parent() {
        crate::files::create_private_dir(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // create_new: two processes racing do not overwrite each other's key.
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => {
            return Err(format!(
                "cannot create the audit key {}: {e}",
                path.display()
            ));
        }
    };
    file.write_all(&key)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write the audit key {}: {e}", path.display()))?;
    tracing::info!(key = %path.display(), "created a new audit trail key");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_private_and_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.key");
        let first = read_or_create(&path).unwrap();
        assert_eq!(first.len(), MIN_KEY_BYTES);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_or_create(&path).unwrap(), first);
    }

    #[test]
    fn short_or_public_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.key");
        std::fs::write(&short, b"tiny").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&short).unwrap_err().contains("at least 32"));
        let public = dir.path().join("public.key");
        std::fs::write(&public, [7u8; 32]).unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read(&public).unwrap_err().contains("readable by everyone"));
        assert!(
            read(&dir.path().join("none"))
                .unwrap_err()
                .contains("cannot read")
        );
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, b"").unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read(&empty).unwrap_err().contains("has 0 bytes"));
        let writable = dir.path().join("writable.key");
        std::fs::write(&writable, [7u8; 32]).unwrap();
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o622)).unwrap();
        assert!(
            read(&writable)
                .unwrap_err()
                .contains("writable by every local user")
        );
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert!(e.contains("a character device"), "{e}");
        assert!(read(dir.path()).unwrap_err().contains("a directory"));
    }
}
