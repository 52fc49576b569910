//! The library under valgrind's memcheck: real Exim sessions on the shipped
//! configuration (`exim -bh`: AUTH right and wrong, MAIL, RCPT, DATA), with the oracle
//! running and with it down, each run once inside
//! `valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite`.
//!
//! Exim leaks by design (its stores live until the process ends) and has its own
//! reports, so the test fails only on what the library causes: an invalid access, a use
//! of uninitialised memory, a bad free or a definite leak whose stack holds a frame of
//! `libexim_access.so` (or of the Rust code in it), or a process that valgrind saw die
//! of a signal. Exim's other reports are printed and left alone.
//!
//! valgrind refuses to run a setuid program, so the test runs a copy of the Exim binary
//! without the setuid bit; the tests run as root, so it runs with the same rights.
//! valgrind follows no child process (`--trace-children=no`): in `-bh` mode the whole
//! SMTP session, and so every library call, happens in the first process.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use exim_access_e2e::smtp::{pair_replies, parse_replies};
use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Session, Via, World, paths, process};

/// A client address from the documentation range.
const CLIENT_IP: &str = "192.0.2.10";

/// How long one session may run under valgrind (about 3 s on 2 cores).
const SESSION_DEADLINE: Duration = Duration::from_secs(180);

/// Words in a valgrind stack line that name the library: its file, or the Rust code in
/// it when valgrind read its symbols (the crate and its wire dependency).
const LIBRARY_MARKS: &[&str] = &["libexim_access", "exim_access::", "access_wire::"];

/// How a valgrind error report starts, for the kinds the test fails on.
const ERROR_KINDS: &[&str] = &[
    "Invalid read",
    "Invalid write",
    "Invalid free",
    "Mismatched free",
    "uninitialised",
    "overlap",
    "are definitely lost",
];

/// Exim under memcheck: the command line of `exim` with the copy of the binary and
/// valgrind in front.
struct Memcheck {
    /// The Exim binary without the setuid bit.
    exim_copy: PathBuf,
    /// Where the logs of valgrind go, one per session.
    log_dir: PathBuf,
    /// Sessions run so far (for the log names).
    runs: usize,
}

impl Memcheck {
    fn new(world: &World) -> Memcheck {
        let exim_copy = world.root().join("exim-not-setuid");
        fs::copy(paths::exim_bin(), &exim_copy).expect("copy the Exim binary");
        fs::set_permissions(&exim_copy, fs::Permissions::from_mode(0o755))
            .expect("drop the setuid bit of the copy");
        let log_dir = world.root().join("valgrind");
        fs::create_dir_all(&log_dir).unwrap();
        Memcheck {
            exim_copy,
            log_dir,
            runs: 0,
        }
    }

    /// Runs `exim -bh CLIENT_IP` with `dialogue` under memcheck; returns the session and
    /// valgrind's log.
    fn bh(&mut self, exim: &Exim, dialogue: &Dialogue) -> (Session, String) {
        self.runs += 1;
        let log = self.log_dir.join(format!("session-{}.log", self.runs));
        let plain = exim.command();
        let mut cmd = Command::new("valgrind");
        cmd.args([
            "--tool=memcheck",
            "--error-exitcode=99",
            "--errors-for-leak-kinds=definite",
            "--leak-check=full",
            "--trace-children=no",
            "--num-callers=50",
            // Lists every object read ("Reading syms from ..."): shows the library loaded.
            "-v",
        ])
        .arg(format!("--log-file={}", log.display()))
        .arg(&self.exim_copy)
        .args(plain.get_args())
        .arg("-bh")
        .arg(CLIENT_IP);
        let run = process::run(cmd, &dialogue.to_bytes(), SESSION_DEADLINE);
        assert!(
            !run.timed_out,
            "exim -bh under valgrind did not finish in {SESSION_DEADLINE:?}"
        );
        let report = fs::read_to_string(&log).unwrap_or_else(|e| {
            panic!(
                "no valgrind log at {} ({e}); is valgrind installed (scripts/setup-debian)?\n{}",
                log.display(),
                run.stderr_text()
            )
        });
        let (greeting, exchanges) = pair_replies(dialogue, parse_replies(&run.stdout_text()));
        let session = Session {
            greeting,
            exchanges,
            run,
        };
        (session, report)
    }
}

/// The reports of a valgrind log, each as its lines without the `==PID== ` prefix.
fn reports(log: &str) -> Vec<Vec<String>> {
    let mut reports = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in log.lines() {
        // Messages are `==PID== text`; `--PID-- ` lines are valgrind's own notes (-v).
        let Some(rest) = line.strip_prefix("==") else {
            continue;
        };
        let Some((_, text)) = rest.split_once("== ") else {
            // `==PID==` alone: the blank line between reports.
            if !current.is_empty() {
                reports.push(std::mem::take(&mut current));
            }
            continue;
        };
        if text.trim().is_empty() {
            if !current.is_empty() {
                reports.push(std::mem::take(&mut current));
            }
        } else {
            current.push(text.to_string());
        }
    }
    if !current.is_empty() {
        reports.push(current);
    }
    reports
}

/// The reports the test fails on: an error of a kind in [`ERROR_KINDS`] with a frame of
/// the library in its stacks, or a process killed by a signal.
fn library_errors(log: &str) -> Vec<String> {
    reports(log)
        .into_iter()
        .filter(|report| {
            let first = &report[0];
            let killed = first.starts_with("Process terminating");
            let error = ERROR_KINDS.iter().any(|kind| first.contains(kind));
            let in_library = report
                .iter()
                .any(|line| LIBRARY_MARKS.iter().any(|mark| line.contains(mark)));
            killed || (error && in_library)
        })
        .map(|report| report.join("\n"))
        .collect()
}

/// Fails on the library's errors in `log`; checks the library was loaded; prints the
/// error summary (Exim's own reports included) for the record.
fn assert_clean(log: &str, context: &str) {
    let library = paths::dlfunc_lib();
    let library_name = library.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        log.lines()
            .any(|l| l.contains("Reading syms from") && l.contains(&library_name)),
        "{context}: the library was never loaded under valgrind"
    );
    let errors = library_errors(log);
    assert!(
        errors.is_empty(),
        "{context}: memcheck found errors in the library:\n\n{}",
        errors.join("\n\n")
    );
    if let Some(summary) = log.lines().find(|l| l.contains("ERROR SUMMARY")) {
        eprintln!("{context}: {summary} (Exim's own; none in the library)");
    }
}

/// AUTH, MAIL, two RCPTs, DATA and QUIT.
fn submission(password: &str) -> Dialogue {
    Dialogue::new()
        .ehlo("client.example")
        .auth_plain("alice", password)
        .mail_from("submitter@example.org")
        .rcpt_to("rcpt1@example.net")
        .rcpt_to("rcpt2@example.net")
        .data("memcheck")
        .quit()
}

#[test]
fn exim_sessions_under_memcheck_find_nothing_in_the_library() {
    let world = World::new(&["alice"]);
    let mut memcheck = Memcheck::new(&world);

    // The oracle running: verdicts through the library.
    let oracle = Oracle::start(&world);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket()).on_error("defer");
    let (ok, log) = memcheck.bh(&exim, &submission(PASSWORD));
    assert_eq!(ok.reply("AUTH").code, 235, "{}", ok.transcript());
    assert_eq!(ok.reply("MAIL").code, 250, "{}", ok.transcript());
    assert_eq!(ok.codes("RCPT"), [250, 250], "{}", ok.transcript());
    ok.assert_oracle_answered();
    assert_clean(&log, "oracle running, right password");

    let (wrong, log) = memcheck.bh(&exim, &Dialogue::auth_only("alice", "wrong"));
    assert_eq!(wrong.reply("AUTH").code, 535, "{}", wrong.transcript());
    assert_clean(&log, "oracle running, wrong password");
    drop(oracle);

    // The oracle down (no socket): every call ends by `on_error`.
    let missing = world.oracle_dir().join("missing.sock");
    let accept = Exim::new(&world, Via::Dlfunc, &missing).on_error("accept");
    let (open, log) = memcheck.bh(&accept, &submission(PASSWORD));
    assert_eq!(open.reply("AUTH").code, 235, "{}", open.transcript());
    assert_eq!(open.codes("RCPT"), [250, 250], "{}", open.transcript());
    assert_clean(&log, "oracle down, on_error=accept");

    let defer = Exim::new(&world, Via::Dlfunc, &missing).on_error("defer");
    let (deferred, log) = memcheck.bh(&defer, &Dialogue::auth_only("alice", PASSWORD));
    assert_eq!(
        deferred.reply("AUTH").code,
        435,
        "{}",
        deferred.transcript()
    );
    assert_clean(&log, "oracle down, on_error=defer");
}

/// The log reading itself: a library frame fails, Exim's own leak does not, a process
/// killed by a signal fails.
#[test]
fn only_the_library_s_reports_fail() {
    let log = "\
==7== Memcheck, a memory error detector
==7== 
==7== 24 bytes in 1 blocks are definitely lost in loss record 9 of 55
==7==    at 0x48417B4: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)
==7==    by 0x1BF6FB: ??? (in /tmp/w/exim-not-setuid)
==7== 
==7== Invalid read of size 1
==7==    at 0x4A: strnlen (vg_replace_strmem.c:1)
==7==    by 0x4B: exim_access::ffi::read_args (ffi.rs:150)
==7==    by 0x4C: check (in /x/libexim_access.so)
==7== 
==7== 32 bytes in 1 blocks are possibly lost in loss record 10 of 55
==7==    by 0x4B: exim_access::client::connect (client.rs:1)
==7== 
==7== Process terminating with default action of signal 11 (SIGSEGV)
==7==    at 0x1: ??? (in /tmp/w/exim-not-setuid)
==7== 
==7== ERROR SUMMARY: 3 errors from 3 contexts (suppressed: 0 from 0)
";
    let errors = library_errors(log);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("Invalid read of size 1"),
        "{errors:#?}"
    );
    assert!(errors[1].starts_with("Process terminating"), "{errors:#?}");
    assert!(library_errors("==7== 24 bytes in 1 blocks are definitely lost\n").is_empty());
}
