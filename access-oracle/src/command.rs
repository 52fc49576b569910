//! Running a program the config names (an exec sink's command, sendmail, nft,
//! fail2ban-client), one way for all: never through a shell (an argument list, so
//! nothing an attacker chose becomes shell syntax), an empty environment but `PATH` and
//! `LC_ALL=C` (messages in English, whatever the host), its input on standard input,
//! the first 4 KiB of its standard output and error kept (the rest read and dropped, so
//! a chatty program never blocks on a full pipe), killed at a timeout.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// The `PATH` a program is run with.
pub const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of standard output and of standard error is kept.
const KEPT: usize = 4096;

/// A program that ran to its end.
#[derive(Debug)]
pub struct Ran {
    /// How it ended.
    pub status: ExitStatus,
    /// Whether its input was all written (a program may exit without reading it).
    pub written: io::Result<()>,
    /// The start of its standard output.
    pub stdout: Vec<u8>,
    /// The start of its standard error.
    pub stderr: Vec<u8>,
}

impl Ran {
    /// `Ok` for exit 0, else [`RunError::Exit`] with the first line of standard error.
    pub fn success(self) -> Result<Ran, RunError> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(RunError::Exit(self.status, first_line(&self.stderr)))
        }
    }
}

/// Why a program did not run to a good end.
#[derive(Debug)]
pub enum RunError {
    /// It could not be started (or its input not written).
    Start(io::Error),
    /// It ran past the timeout and was killed.
    Timeout(Duration),
    /// It exited with this status; the first line of its standard error, escaped.
    Exit(ExitStatus, String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Start(e) => write!(f, "cannot run it: {e}"),
            RunError::Timeout(t) => write!(f, "killed at its timeout ({} ms)", t.as_millis()),
            RunError::Exit(status, err) if err.is_empty() => write!(f, "{status}"),
            RunError::Exit(status, err) => write!(f, "{status}: {err}"),
        }
    }
}

/// The first line of `output`, escaped (empty when there is none).
pub fn first_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let first = text.lines().next().unwrap_or("");
    crate::text::escape_controls(first).into_owned()
}

/// Reads `from` to its end, keeping the first [`KEPT`] bytes.
async fn drain(from: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut from) = from else {
        return kept;
    };
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = KEPT.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
    }
}

/// Runs `program` with `args` and `input` on its standard input (none: `/dev/null`),
/// killed at `timeout`. A run that ends, whatever its status, is `Ok`.
pub async fn run<A: AsRef<OsStr>>(
    program: &Path,
    args: &[A],
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<Ran, RunError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(RunError::Start)?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let write = async {
            match (stdin, input) {
                // Dropped at the end: the program sees the end of its input.
                (Some(mut stdin), Some(input)) => stdin.write_all(input).await,
                _ => Ok(()),
            }
        };
        let (written, stdout, stderr) = tokio::join!(write, drain(stdout), drain(stderr));
        let status = child.wait().await.map_err(RunError::Start)?;
        Ok(Ran {
            status,
            written,
            stdout,
            stderr,
        })
    };
    // On the timeout the future is dropped, and with it the child: killed.
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(RunError::Timeout(timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn input_output_status_and_the_timeout() {
        let sh = Path::new("/bin/sh");
        let ran = run(
            sh,
            &["-c", "cat; echo oops >&2; exit 3"],
            Some(b"hello"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(ran.stdout, b"hello");
        assert_eq!(ran.status.code(), Some(3));
        let e = ran.success().unwrap_err();
        assert!(
            matches!(&e, RunError::Exit(_, line) if line == "oops"),
            "{e}"
        );
        // Only PATH and LC_ALL reach the program.
        let ran = run(sh, &["-c", "env | sort"], None, Duration::from_secs(10))
            .await
            .unwrap();
        let env = String::from_utf8(ran.stdout).unwrap();
        let names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| !["PWD", "SHLVL", "_"].contains(k))
            .collect();
        assert_eq!(names, ["LC_ALL", "PATH"], "{env}");
        // A chatty program does not block; what is kept is bounded.
        let ran = run(
            sh,
            &["-c", "head -c 1000000 /dev/zero"],
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(ran.stdout.len(), KEPT);
        let e = run(
            Path::new("/bin/sleep"),
            &["30"],
            None,
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "killed at its timeout (100 ms)");
        let e = run(
            Path::new("/no/such/program"),
            &[] as &[&str],
            None,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().starts_with("cannot run it: "), "{e}");
    }
}
