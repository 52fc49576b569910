//! Crash safety (issue 15 point 2): `kill -9` of the real oracle while real Exim
//! sessions run, and what is in force after the restart.
//!
//! * Two threads run `exim -bh` sessions (AUTH PLAIN, MAIL) on the shipped configuration
//!   through the release library, one after the other, all the time: one under the
//!   shipped `on_error` (`accept`), one under `on_error=defer`, both with the shipped
//!   `timeout_ms`. The oracle is killed with SIGKILL in the middle. Every session ends
//!   within the library's timeout per call (plus a margin for Exim itself), measured;
//!   those that ran while the oracle was down got the `on_error` answer (a 235 with the
//!   library's "no verdict" line in Exim's log, or the 435 of `on_error=defer`), those
//!   before the kill and after the restart the oracle's.
//! * Just before the kill, on a fresh oracle (no snapshot written yet, checked by listing
//!   the state directory), the test makes state and has each change acknowledged: an
//!   account held by five failed logins, an address blocked by `ctl block`, an address
//!   deferred by twenty failures from it, an account three failures short of a hold,
//!   six recipients of ten (`[rules.recipient_ceiling] limit = 10`), a hold released by
//!   `ctl release`, a hold by `ctl hold`. The kill follows the last acknowledgement
//!   directly. After the restart the same requests get the same answers, and the counts
//!   go on where they were: two more failures hold the account, four more recipients
//!   are accepted and the fifth deferred. So all of it came back from the journal.
//! * A second round: a clean restart writes the snapshot, more changes follow (some undo
//!   what the snapshot holds: a release, an unblock), counts are split between the
//!   snapshot and the journal, then `kill -9` again: after the restart, the snapshot and
//!   the journal replayed on top of it give exactly what was acknowledged.
//!
//! Everything is checked by requests on the Exim socket, never by reading the state
//! files (only their names are listed). Build first: `cargo build -p access-oracle &&
//! cargo build --release -p exim-dlfunc`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Session, Via, World, paths};

/// The recipient ceiling of this test (the default is 200): small, so reaching it takes
/// a few requests.
const RCPT_LIMIT: usize = 10;

/// The oracle's configuration beside the harness's `[server]` table.
const CONFIG: &str = "[rules.recipient_ceiling]\nlimit = 10\n";

/// The account and address of the Exim sessions under load.
const LOAD_USER: &str = "loader";
const LOAD_IP: &str = "192.0.2.10";

/// The calls to the oracle of one load session: `connect`, `auth`, `mail`.
const CALLS_PER_SESSION: u32 = 3;

/// What Exim itself may take for a session beyond the library's calls (starting the
/// process, reading the configuration, the dialogue) on a busy machine.
const EXIM_MARGIN: Duration = Duration::from_millis(2500);

/// Sessions of each load thread that ran entirely while the oracle was down.
const DOWN_SESSIONS: usize = 5;

/// The longest wait for any condition polled.
const DEADLINE: Duration = Duration::from_secs(30);

/// The text of a hold by `failed_logins_account` (the default `message`).
const HOLD_TEXT: &str =
    "account temporarily locked after repeated authentication failures, try again later";

/// Exim's answer to AUTH under `on_error=defer` when the oracle cannot be reached.
const AUTH_UNAVAILABLE: &str =
    "Unable to authenticate at present: authentication check unavailable";

/// The value of `NAME = value` in the shipped `macros.conf` (the default Exim uses when
/// the site does not define the macro).
fn shipped_macro(name: &str) -> String {
    let path = paths::exim_config_snippets().join("macros.conf");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {}", path.display()))
}

/// Sends `line` on the Exim socket; its answer (panics with the oracle's log when there
/// is none).
fn ask(oracle: &Oracle, line: &str) -> String {
    oracle
        .request(line)
        .unwrap_or_else(|| panic!("no answer to {line:?}:\n{}", oracle.log_text()))
}

/// Sends `line` and checks the answer is `expect`.
fn expect(oracle: &Oracle, line: &str, expect: &str) {
    assert_eq!(ask(oracle, line), expect, "{line}");
}

/// Sends `line` and checks the answer starts with `prefix`; returns it.
fn expect_prefix(oracle: &Oracle, line: &str, prefix: &str) -> String {
    let answer = ask(oracle, line);
    assert!(answer.starts_with(prefix), "{line}: {answer}");
    answer
}

/// `n` failed logins of `user` from `ip`, each with its own password hash (`first`,
/// `first + 1`, ...: distinct wrong passwords, each of which counts), each answered
/// `accept` (a rule that trips does not change the request's own outcome).
fn fail(oracle: &Oracle, user: &str, ip: &str, first: u32, n: u32) {
    for k in first..first + n {
        expect(
            oracle,
            &format!("auth user={user} ip={ip} result=fail pwhash={k:04x}"),
            "accept",
        );
    }
}

/// Runs `access-oracle ctl ARGS` and checks it succeeded.
fn ctl(oracle: &Oracle, args: &[&str]) {
    oracle.ctl(args).assert_success();
}

/// The names in the state directory, sorted.
fn state_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn has_snapshot(dir: &Path) -> bool {
    state_files(dir).iter().any(|n| n == "state.snapshot")
}

fn has_journal(dir: &Path) -> bool {
    state_files(dir)
        .iter()
        .any(|n| n.starts_with("state.journal.") && !n.contains(".bad-"))
}

/// Polls `f` until it holds or [`DEADLINE`] passes.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < until, "{what}: not within {DEADLINE:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// One finished load session.
struct Run {
    /// The `on_error` its Exim ran under.
    on_error: &'static str,
    started: Instant,
    ended: Instant,
    session: Session,
}

/// Exim sessions one after the other until `stop`, each recorded in `runs`.
fn load(
    exim: Exim,
    on_error: &'static str,
    stop: Arc<AtomicBool>,
    runs: Arc<Mutex<Vec<Run>>>,
) -> thread::JoinHandle<()> {
    let dialogue = Dialogue::new()
        .ehlo("load.example")
        .auth_plain(LOAD_USER, PASSWORD)
        .mail_from("loader@example.org")
        .quit();
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let session = exim.bh(LOAD_IP, &dialogue);
            let ended = Instant::now();
            runs.lock().expect("runs").push(Run {
                on_error,
                started,
                ended,
                session,
            });
        }
    })
}

/// How many sessions under `on_error` satisfy `f`.
fn count(runs: &Mutex<Vec<Run>>, on_error: &str, f: impl Fn(&Run) -> bool) -> usize {
    runs.lock()
        .expect("runs")
        .iter()
        .filter(|r| r.on_error == on_error && f(r))
        .count()
}

/// Whether the oracle answered every call of the session.
fn answered(run: &Run) -> bool {
    run.session.oracle_problems().is_empty()
}

/// A request and the answer it got before the kill, asked again after the restart.
struct Probe {
    line: String,
    before: String,
}

impl Probe {
    /// Asks `line` now and keeps the answer, which must start with `prefix`.
    fn take(oracle: &Oracle, line: &str, prefix: &str) -> Probe {
        Probe {
            line: line.to_string(),
            before: expect_prefix(oracle, line, prefix),
        }
    }

    /// Asks again: the same answer.
    fn same(&self, oracle: &Oracle, what: &str) {
        assert_eq!(
            ask(oracle, &self.line),
            self.before,
            "{what}: {} answered differently after the restart:\n{}",
            self.line,
            oracle.log_text()
        );
    }
}

#[test]
fn kill_9_under_exim_load_loses_nothing_acknowledged() {
    let world = World::new(&[LOAD_USER]);
    let state = world.state_dir();
    let mut oracle = Oracle::start_with(&world, CONFIG);

    // The library's settings as shipped: timeout_ms and on_error are the defaults of
    // macros.conf; one load thread runs under on_error=defer, the other setting.
    let timeout_ms: u64 = shipped_macro("ACCESS_TIMEOUT_MS")
        .parse()
        .expect("ACCESS_TIMEOUT_MS is a number");
    let shipped_on_error = shipped_macro("ACCESS_ON_ERROR");
    assert_eq!(shipped_on_error, "accept", "the shipped on_error");
    let session_bound =
        Duration::from_millis(timeout_ms * u64::from(CALLS_PER_SESSION)) + EXIM_MARGIN;
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket()).timeout_ms(timeout_ms);

    // Load: Exim sessions all the time, answered by the oracle.
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(Mutex::new(Vec::new()));
    let loaders = vec![
        load(exim.clone(), "accept", stop.clone(), runs.clone()),
        load(exim.on_error("defer"), "defer", stop.clone(), runs.clone()),
    ];
    for on_error in ["accept", "defer"] {
        eventually(&format!("an answered session under {on_error}"), || {
            count(&runs, on_error, answered) >= 1
        });
    }

    // The state, each change acknowledged (and seen in force) before the next.
    // (6) An administrator's hold.
    ctl(
        &oracle,
        &["hold", "manual", "--for", "2h", "--reason", "crash test"],
    );
    let manual = Probe::take(&oracle, "mail user=manual ip=192.0.2.40", "defer ");
    // (2) An address blocked by an administrator.
    ctl(
        &oracle,
        &[
            "block",
            "198.51.100.66",
            "--for",
            "2h",
            "--reason",
            "crash test",
        ],
    );
    let blocked = Probe::take(&oracle, "connect ip=198.51.100.66", "deny ");
    // (1) An account held by five failed logins.
    fail(&oracle, "held", "203.0.113.5", 1, 5);
    let held = Probe::take(&oracle, "mail user=held ip=203.0.113.5", "defer ");
    assert_eq!(held.before, format!("defer {HOLD_TEXT}"));
    // (5) Another held that way, then released.
    fail(&oracle, "rel", "203.0.113.8", 1, 5);
    expect_prefix(&oracle, "mail user=rel ip=203.0.113.8", "defer ");
    ctl(&oracle, &["release", "rel"]);
    let released = Probe::take(&oracle, "mail user=rel ip=203.0.113.8", "accept");
    // (2) An address deferred for AUTH by twenty failures from it (four on each of five
    // accounts: no account held, too few accounts for spraying).
    for a in 1..=5 {
        fail(&oracle, &format!("victim{a}"), "203.0.113.20", 1, 4);
    }
    let ip_deferred = Probe::take(
        &oracle,
        "auth user=bystander ip=203.0.113.20 result=ok",
        "defer ",
    );
    // (3) Three failures of five.
    fail(&oracle, "near", "203.0.113.7", 1, 3);
    let near = Probe::take(&oracle, "mail user=near ip=203.0.113.7", "accept");
    // (4) Six recipients of ten; the last of them is the last acknowledgement.
    assert!(
        !has_snapshot(&state),
        "no snapshot may exist yet, or the test would not test the journal: {:?}",
        state_files(&state)
    );
    for r in 1..=6 {
        expect(
            &oracle,
            &format!("rcpt user=sender ip=192.0.2.30 rcpt=r{r}@example.net"),
            "accept",
        );
    }
    let killing = Instant::now();
    oracle.kill();
    let killed = Instant::now();
    assert!(
        !has_snapshot(&state) && has_journal(&state),
        "killed before any snapshot, with a journal: {:?}",
        state_files(&state)
    );

    // While the oracle is down, Exim goes on by on_error.
    for on_error in ["accept", "defer"] {
        eventually(
            &format!("{DOWN_SESSIONS} sessions under {on_error} with the oracle down"),
            || count(&runs, on_error, |r| r.started >= killed) >= DOWN_SESSIONS,
        );
    }
    let restarting = Instant::now();
    oracle.restart();
    let restarted = Instant::now();
    for on_error in ["accept", "defer"] {
        eventually(
            &format!("an answered session under {on_error} after the restart"),
            || count(&runs, on_error, |r| r.started >= restarted && answered(r)) >= 1,
        );
    }
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().expect("a load thread");
    }

    let runs = runs.lock().expect("runs");
    let mut down = [0usize; 2];
    let mut down_longest = Duration::ZERO;
    let mut across = 0;
    for run in runs.iter() {
        let s = &run.session;
        let context = format!(
            "a session under on_error={} that started {:?} after the kill and took {:?}",
            run.on_error,
            run.started.checked_duration_since(killed),
            s.run.elapsed
        );
        s.assert_exim_healthy();
        // Within the library's timeout for each call, whatever the oracle was doing.
        assert!(
            s.run.elapsed <= session_bound,
            "{context}: over {session_bound:?}:\n{}",
            s.transcript()
        );
        if run.ended <= killing || run.started >= restarted {
            // The oracle was up the whole time: its answers.
            assert!(answered(run), "{context}:\n{}", s.transcript());
            assert_eq!(s.reply("AUTH").code, 235, "{context}:\n{}", s.transcript());
            assert_eq!(s.reply("MAIL").code, 250, "{context}:\n{}", s.transcript());
        } else if run.started < killed && run.ended > killing {
            // In flight at the kill: bounded (above), whatever it got.
            across += 1;
        } else if run.started >= killed && run.ended <= restarting {
            // Down the whole time: every call ended by on_error.
            let problems = s.oracle_problems();
            assert!(
                !problems.is_empty()
                    && problems
                        .iter()
                        .all(|p| p.contains("no verdict from the oracle")),
                "{context}: the library's fallback, logged:\n{}",
                s.transcript()
            );
            down_longest = down_longest.max(s.run.elapsed);
            if run.on_error == "accept" {
                down[0] += 1;
                assert_eq!(s.reply("AUTH").code, 235, "{context}:\n{}", s.transcript());
                assert_eq!(s.reply("MAIL").code, 250, "{context}:\n{}", s.transcript());
            } else {
                down[1] += 1;
                let auth = s.reply("AUTH");
                assert_eq!(
                    (auth.code, auth.text()),
                    (435, AUTH_UNAVAILABLE.to_string()),
                    "{context}:\n{}",
                    s.transcript()
                );
            }
        }
    }
    assert!(
        down.iter().all(|&n| n >= DOWN_SESSIONS),
        "sessions with the oracle down (accept, defer): {down:?}"
    );
    eprintln!(
        "{} Exim sessions, each within {session_bound:?}: {across} in flight at the kill, \
         {down:?} (on_error accept, defer) with the oracle down, the longest of these {down_longest:?}",
        runs.len()
    );

    // After the restart, every acknowledged change is in force.
    held.same(&oracle, "(1) held by failures");
    blocked.same(&oracle, "(2) blocked by ctl block");
    ip_deferred.same(&oracle, "(2) deferred by failures from the address");
    manual.same(&oracle, "(6) held by ctl hold");
    released.same(&oracle, "(5) released");
    // The release also forgot the failures: one more does not hold it.
    fail(&oracle, "rel", "203.0.113.8", 6, 1);
    released.same(&oracle, "(5) released, after one more failure");
    // Three failures were kept: two more make five.
    near.same(&oracle, "(3) three failures");
    fail(&oracle, "near", "203.0.113.7", 4, 2);
    expect(
        &oracle,
        "mail user=near ip=203.0.113.7",
        &format!("defer {HOLD_TEXT}"),
    );
    // Six recipients were kept: four more are accepted, the eleventh deferred.
    for r in 7..=RCPT_LIMIT {
        expect(
            &oracle,
            &format!("rcpt user=sender ip=192.0.2.30 rcpt=r{r}@example.net"),
            "accept",
        );
    }
    expect_prefix(
        &oracle,
        "rcpt user=sender ip=192.0.2.30 rcpt=r11@example.net",
        "defer ",
    );
    let ceiling = Probe::take(
        &oracle,
        "rcpt user=sender ip=192.0.2.30 rcpt=r12@example.net",
        "defer ",
    );

    // Round two: a clean restart writes the snapshot; counts begun before it go on after.
    fail(&oracle, "split", "203.0.113.9", 1, 2);
    for r in 1..=3 {
        expect(
            &oracle,
            &format!("rcpt user=split ip=192.0.2.31 rcpt=s{r}@example.net"),
            "accept",
        );
    }
    oracle.stop();
    assert!(
        has_snapshot(&state),
        "a clean stop writes the snapshot: {:?}",
        state_files(&state)
    );
    oracle.restart();
    // What the snapshot holds, undone or added to in the journal only.
    ctl(&oracle, &["release", "manual"]);
    let manual_released = Probe::take(&oracle, "mail user=manual ip=192.0.2.40", "accept");
    ctl(&oracle, &["unblock", "198.51.100.66"]);
    let unblocked = Probe::take(&oracle, "connect ip=198.51.100.66", "accept");
    ctl(
        &oracle,
        &[
            "hold",
            "manual2",
            "--for",
            "2h",
            "--reason",
            "crash test, round two",
        ],
    );
    let manual2 = Probe::take(&oracle, "mail user=manual2 ip=192.0.2.41", "defer ");
    fail(&oracle, "held2", "203.0.113.15", 1, 5);
    let held2 = Probe::take(&oracle, "mail user=held2 ip=203.0.113.15", "defer ");
    fail(&oracle, "split", "203.0.113.9", 3, 2);
    let split = Probe::take(&oracle, "mail user=split ip=203.0.113.9", "accept");
    for r in 4..=6 {
        expect(
            &oracle,
            &format!("rcpt user=split ip=192.0.2.31 rcpt=s{r}@example.net"),
            "accept",
        );
    }
    oracle.kill();
    assert!(
        has_snapshot(&state) && has_journal(&state),
        "killed with a snapshot and a journal after it: {:?}",
        state_files(&state)
    );
    oracle.restart();

    // Round one's state, from the snapshot.
    held.same(&oracle, "(1) held, from the snapshot");
    ip_deferred.same(&oracle, "(2) deferred address, from the snapshot");
    released.same(&oracle, "(5) released, from the snapshot");
    ceiling.same(&oracle, "(4) at the ceiling, from the snapshot");
    expect(
        &oracle,
        "mail user=near ip=203.0.113.7",
        &format!("defer {HOLD_TEXT}"),
    );
    // Round two's, from the journal on top of it.
    manual_released.same(&oracle, "ctl release of a hold the snapshot holds");
    unblocked.same(&oracle, "ctl unblock of a block the snapshot holds");
    manual2.same(&oracle, "ctl hold after the snapshot");
    held2.same(&oracle, "held by failures after the snapshot");
    split.same(&oracle, "four failures of five");
    // Three recipients in the snapshot, three in the journal: four more, then deferred.
    for r in 7..=RCPT_LIMIT {
        expect(
            &oracle,
            &format!("rcpt user=split ip=192.0.2.31 rcpt=s{r}@example.net"),
            "accept",
        );
    }
    expect(
        &oracle,
        "rcpt user=split ip=192.0.2.31 rcpt=s11@example.net",
        &ceiling.before,
    );
    // Two failures in the snapshot, two in the journal: the fifth holds.
    fail(&oracle, "split", "203.0.113.9", 5, 1);
    expect(
        &oracle,
        "mail user=split ip=203.0.113.9",
        &format!("defer {HOLD_TEXT}"),
    );
    let log = oracle.log_text();
    assert!(!log.contains("panicked"), "{log}");
}
