//! Creating a Unix socket with the configured mode and group, safely replacing a stale one.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
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
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.mode))
        .map_err(io_err("cannot set mode of", path))?;
    if let Some(gid) = cfg.group {
        std::os::unix::fs::chown(path, None, Some(gid.as_raw()))
            .map_err(io_err("cannot set group of", path))?;
    }
    Ok((listener, guard))
}
