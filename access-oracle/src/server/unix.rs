//! Creating a Unix socket with the configured mode and group, safely replacing a stale one,
//! and putting its file back when it is deleted while the oracle serves ([`Kept`]).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::config::SocketConfig;

/// Removes the socket file when dropped, so a clean stop leaves nothing behind.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why a socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the path.
    #[error("{0} is in use by another running process")]
    InUse(PathBuf),
    /// Something other than a socket is at the path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A system call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BindError + 'a {
    move |source| BindError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the socket, then applies its mode and group.
///
/// A leftover socket file nobody listens on is replaced; one with a live listener is
/// not (two oracles on one socket would split the state).
pub fn bind(cfg: &SocketConfig) -> Result<(UnixListener, SocketFile), BindError> {
    let path = cfg.path.as_path();
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io_err("cannot create directory for", path))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("cannot set mode of directory for", path))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(BindError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io_err("cannot remove stale socket", path))?;
        }
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot inspect", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("cannot bind", path))?;
    let guard = SocketFile(path.to_path_buf());
    set_owner_and_mode(cfg)?;
    Ok((listener, guard))
}

fn set_owner_and_mode(cfg: &SocketConfig) -> Result<(), BindError> {
    let path = cfg.path.as_path();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .map_err(io_err("cannot set mode of", path))?;
    if let Some(gid) = cfg.group {
        std::os::unix::fs::chown(path, None, Some(gid.as_raw()))
            .map_err(io_err("cannot set group of", path))?;
    }
    Ok(())
}

/// A file's device and inode: what tells the socket file we bound from another one at
/// the same path.
fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// Watches over a bound socket's file. Deleted while the oracle serves (a careless
/// cleanup of the socket directory, a package script), the listener would go on with no
/// path to reach it: every client would find no socket. [`Kept::check`] notices and binds
/// a new listener at the path; a file that another one replaced is reported, not touched.
#[derive(Debug)]
pub struct Kept {
    cfg: SocketConfig,
    identity: Option<(u64, u64)>,
    reported: bool,
}

impl Kept {
    /// Keeps the socket file just bound for `cfg`.
    pub fn new(cfg: &SocketConfig) -> Kept {
        Kept {
            cfg: cfg.clone(),
            identity: identity(&cfg.path).ok(),
            reported: false,
        }
    }

    /// Checks that the path still is the socket this process listens on. When the file
    /// is gone, binds a new listener there (mode and group as configured) and returns it:
    /// the caller accepts on it from then on. Problems are logged once until resolved.
    pub fn check(&mut self) -> Option<UnixListener> {
        let path = self.cfg.path.as_path();
        match identity(path) {
            Ok(found) if Some(found) == self.identity => {
                self.reported = false;
                None
            }
            Ok(_) => {
                if !self.reported {
                    self.reported = true;
                    tracing::error!(path = %path.display(),
                        "the socket file was replaced by another file: connections to it do not reach this oracle; remove it (it is then recreated) or restart the oracle");
                }
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let bound = UnixListener::bind(path)
                    .map_err(io_err("cannot bind", path))
                    .and_then(|l| set_owner_and_mode(&self.cfg).map(|()| l));
                match bound {
                    Ok(listener) => {
                        self.identity = identity(path).ok();
                        self.reported = false;
                        tracing::warn!(path = %path.display(),
                            "the socket file was deleted while serving: recreated");
                        Some(listener)
                    }
                    Err(e) => {
                        if !self.reported {
                            self.reported = true;
                            tracing::error!(error = %e,
                                "the socket file was deleted while serving and cannot be recreated: clients cannot connect");
                        }
                        None
                    }
                }
            }
            Err(e) => {
                if !self.reported {
                    self.reported = true;
                    tracing::error!(path = %path.display(), error = %e,
                        "cannot check the socket file");
                }
                None
            }
        }
    }
}
