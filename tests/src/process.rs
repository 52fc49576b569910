//! Running a child process with input, captured output and a hard deadline.
//!
//! Every external program the tests run (Exim, swaks, `access-oracle ctl`) goes through
//! [`run`], so a hung program fails its test after a bounded time instead of hanging the
//! whole test binary.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or killed) child process left behind.
#[derive(Debug)]
pub struct Finished {
    /// The command line, for messages.
    pub command: String,
    /// Exit status; after a timeout, the status of the killed process.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// Whether the deadline passed and the process was killed.
    pub timed_out: bool,
}

impl Finished {
    /// Stdout as (lossy) UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as (lossy) UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The signal that ended the process, if one did (a crash, or the timeout's kill).
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Panics with the command, status and output unless the process exited with 0.
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success() && !self.timed_out,
            "{} failed ({}{}):\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.status,
            if self.timed_out { ", timed out" } else { "" },
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }
}

/// Describes a command for messages: program and arguments, space separated.
pub fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` with `input` on its stdin, capturing stdout and stderr, and kills it when
/// it is still running after `deadline`.
///
/// Panics only when the program cannot be started at all (not installed, not
/// executable): that is an environment problem, reported with the command line.
pub fn run(mut cmd: Command, input: &[u8], deadline: Duration) -> Finished {
    let command = describe(&cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));

    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // A child that stops reading makes this write fail (EPIPE): that is its business.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));

    let (status, timed_out) = wait_until(&mut child, started + deadline);
    let elapsed = started.elapsed();
    let _ = writer.join();
    Finished {
        command,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed,
        timed_out,
    }
}

/// Reads a pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Waits for `child` until `deadline`, then kills it; returns its status and whether it
/// had to be killed.
pub fn wait_until(child: &mut Child, deadline: Instant) -> (ExitStatus, bool) {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (status, false),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let status = child.wait().expect("wait for a killed child");
                return (status, true);
            }
        }
    }
}

/// The exit status of a child that has already exited, taking it out of `child`;
/// `None` while it runs (or when there is none).
pub fn reap_if_exited(child: &mut Option<std::process::Child>) -> Option<std::process::ExitStatus> {
    let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
    *child = None;
    Some(status)
}
