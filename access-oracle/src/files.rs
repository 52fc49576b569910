//! Files the oracle reads because the config names them, and files it creates.
//!
//! Reading: a path an operator typed (a GeoIP database, a list, the accounts file, a key,
//! the config itself) is opened without blocking (a FIFO would otherwise wait for a
//! writer), must be a regular file (`/dev/zero`, a FIFO or a directory is refused with
//! what it is), must not be writable by every local user, and is read up to a limit per
//! kind of file, checked before reading and again while reading (a file that grows in
//! between): [`read_bounded`]. Every such file is loaded whole into memory, so without
//! the limit one wrong path (`city_db = "/dev/zero"`) grows the process until the kernel
//! kills it.
//!
//! Creating: what the oracle writes (state, alerts, positions, dead letters, the audit
//! trail) names accounts and addresses, so directories are created 0700 and files 0600
//! whatever the umask ([`create_private_dir`], [`PRIVATE_FILE_MODE`]).

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Mode of the files the oracle creates: its owner only.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Mode of the directories the oracle creates: its owner only.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// What a file is read for and the most read of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The kind of file, for messages ("a GeoIP database").
    pub what: &'static str,
    /// The largest size accepted, in bytes.
    pub max_bytes: u64,
    /// Why that size, for messages.
    pub why: &'static str,
}

/// What a file type is, in words: "a character device", "a FIFO", "a directory".
pub fn describe_type(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// An error of kind `InvalidData` with `message`: what [`read_bounded`] refuses.
fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Opens `path` for reading without blocking on a FIFO and checks what it is: a regular
/// file, not writable by everyone, at most `limit.max_bytes` long. Returns the open file
/// and its metadata (taken from the open file, so a rename in between cannot swap it).
pub fn open_regular(path: &Path, limit: Limit) -> io::Result<(File, Metadata)> {
    let file = OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO for reading would wait for a writer; on a regular
        // file the flag changes nothing. O_NOCTTY: a terminal never becomes ours.
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    check_regular(&meta, limit)?;
    Ok((file, meta))
}

/// The checks of [`open_regular`] on metadata already at hand.
pub fn check_regular(meta: &Metadata, limit: Limit) -> io::Result<()> {
    if !meta.is_file() {
        return Err(refused(format!(
            "is {}; {} must be a regular file",
            describe_type(meta),
            limit.what
        )));
    }
    if meta.mode() & 0o002 != 0 {
        return Err(refused(format!(
            "is writable by every local user; refusing {} anyone could replace (chmod o-w)",
            limit.what
        )));
    }
    if meta.len() > limit.max_bytes {
        return Err(refused(too_big(meta.len(), limit)));
    }
    Ok(())
}

fn too_big(len: u64, limit: Limit) -> String {
    format!(
        "is {len} bytes; {} is read into memory and may be at most {} bytes ({})",
        limit.what, limit.max_bytes, limit.why
    )
}

/// Reads a whole regular file of at most `limit.max_bytes` (see [`open_regular`]); a
/// file that grows past the limit while it is read is refused too. Returns the bytes and
/// the metadata of the file read.
pub fn read_bounded(path: &Path, limit: Limit) -> io::Result<(Vec<u8>, Metadata)> {
    let (file, meta) = open_regular(path, limit)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.max_bytes + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit.max_bytes {
        return Err(refused(too_big(bytes.len() as u64, limit)));
    }
    Ok((bytes, meta))
}

/// [`read_bounded`], as UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: Limit) -> io::Result<String> {
    let (bytes, _) = read_bounded(path, limit)?;
    String::from_utf8(bytes).map_err(|_| refused(format!("{} is not UTF-8 text", limit.what)))
}

/// Reads a secret file the config names (a key, a password, a shared secret) as
/// [`read_bounded`] does, refused when every local user may read it; `key` names the
/// setting in messages (`secret_file /etc/x is readable by every local user; ...`).
pub fn read_secret_file(key: &str, path: &Path, limit: Limit) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let (bytes, meta) = read_bounded(path, limit).map_err(|e| format!("{key} {shown}: {e}"))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "{key} {shown} is readable by every local user; refusing it (chmod o-r)"
        ));
    }
    Ok(bytes)
}

/// The most read of a `ca_file`.
const CA_LIMIT: Limit = Limit {
    what: "a CA certificate file",
    max_bytes: 1 << 20,
    why: "a few PEM certificates",
};

/// Reads a `ca_file` the config names for an HTTPS client: at least one PEM certificate.
pub fn read_ca_certs(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let shown = path.display();
    let (pem, _) = read_bounded(path, CA_LIMIT).map_err(|e| format!("ca_file {shown}: {e}"))?;
    let mut certs = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| format!("ca_file {shown}: not PEM certificates ({e})"))?;
        let cert = reqwest::Certificate::from_der(&der)
            .map_err(|e| format!("ca_file {shown}: a certificate that cannot be read ({e})"))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(format!(
            "ca_file {shown} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

/// Creates `dir` and its missing parents with mode 0700 (whatever the umask).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Options that create a file with mode 0600 (whatever the umask) and append to it.
pub fn private_append() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.create(true).append(true).mode(PRIVATE_FILE_MODE);
    o
}

/// Options that create (or truncate) a file with mode 0600 for writing.
pub fn private_create() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE);
    o
}

/// Whether `path` could be created: its nearest existing ancestor is a directory (the
/// ones between are created as needed). The error says which ancestor is not.
pub fn creatable(path: &Path) -> Result<(), String> {
    let mut at = path.parent();
    while let Some(dir) = at {
        if let Ok(meta) = std::fs::metadata(dir) {
            if !meta.is_dir() {
                return Err(format!(
                    "{} cannot be created: {} is {}, not a directory",
                    path.display(),
                    dir.display(),
                    describe_type(&meta)
                ));
            }
            return Ok(());
        }
        at = dir.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    const SMALL: Limit = Limit {
        what: "a test file",
        max_bytes: 16,
        why: "a test",
    };

    fn message(r: io::Result<(Vec<u8>, Metadata)>) -> String {
        r.map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            message(read_bounded(Path::new("/dev/zero"), SMALL)).contains("a character device")
        );
        assert!(message(read_bounded(dir.path(), SMALL)).contains("a directory"));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = Instant::now();
        assert!(message(read_bounded(&fifo, SMALL)).contains("a FIFO"));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "opening the FIFO blocked"
        );
    }

    #[test]
    fn sizes_are_bounded_and_world_writable_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, [b'x'; 16]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_bounded(&p, SMALL).unwrap().0.len(), 16);
        std::fs::write(&p, [b'x'; 17]).unwrap();
        let m = message(read_bounded(&p, SMALL));
        assert!(
            m.contains("is 17 bytes") && m.contains("at most 16 bytes (a test)"),
            "{m}"
        );
        std::fs::write(&p, b"ok").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(message(read_bounded(&p, SMALL)).contains("writable by every local user"));
    }

    #[test]
    fn created_paths_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir(&sub).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let f = sub.join("f");
        private_append().open(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        let g = sub.join("g");
        private_create().open(&g).unwrap();
        assert_eq!(mode(&g), 0o600);
    }
}
