//! Fault test (issue 15 point 2): the wall clock steps back and forward by an hour while
//! the real oracle serves, as an NTP correction or an administrator's `date -s` does.
//!
//! Only the oracle's clock moves: it runs under libfaketime (`LD_PRELOAD`, Debian's
//! `faketime` package) reading its offset from a file the test rewrites, with the
//! monotonic clock left alone (`FAKETIME_DONT_FAKE_MONOTONIC=1`), so `CLOCK_REALTIME`
//! steps while tokio's timers, `ctl`, Exim and the test keep the real time. The oracle
//! starts at 00:20 UTC of the day, so the first step back also crosses midnight into the
//! day before (the audit trail's day segments).
//!
//! What each step must not break is checked through requests (the line protocol and a
//! real `exim -bh` session through the library on the shipped configuration) and `ctl`
//! output, waiting for the oracle's clock by polling `ctl status` with a deadline:
//!
//! 1. failures counted before a step back of an hour still count after it: an account
//!    reaching the threshold across the step is held; no panic, verdicts keep coming;
//! 2. a step forward of two hours, past every window: the earlier failures no longer
//!    count (a new one does not hold the account), the hold and an administrator's block
//!    whose end passed are over, `ctl status` and `ctl account` answer;
//! 3. a step back of an hour again, with failures and a hold stamped by the clock before
//!    it (now in its future): no panic; those failures still count, the hold stays in
//!    force until the wall-clock time it names, and `ctl release` ends it; failures
//!    counted after the step leave the window on time although one from before it is
//!    still in it (a small step forward of 6 minutes shows it);
//! 4. the audit trail verifies: no segment of the day before was begun behind the
//!    chain's back.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::oracle::audit;
use exim_access_e2e::{Dialogue, Exim, Oracle, PASSWORD, Via, World};
use jiff::Timestamp;
use serde_json::Value;

/// Debian's libfaketime, the variant that serialises its clock calls (the oracle is
/// multi-threaded).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

const DEADLINE: Duration = Duration::from_secs(30);

const HOUR: i64 = 3600;

/// The failed-logins rule's text while an account is held.
const HOLD_TEXT: &str = "held by the clock test";

/// The prefix Exim puts before a `server_condition` text (a deferred AUTH).
const AUTH_DEFER_PREFIX: &str = "Unable to authenticate at present: ";

/// The rule on every source (no familiar networks spared), its default threshold of 5
/// in 5 minutes and hold of 15 minutes.
const CONFIG: &str = "[rules.failed_logins_account]\n\
                      hold_scope = \"all\"\n\
                      message = \"held by the clock test\"\n";

/// The oracle's wall clock: libfaketime's offset file. `base` puts the oracle at 00:20
/// UTC of the day the test started; [`FakeClock::step_to`] moves it relative to that.
struct FakeClock {
    file: PathBuf,
    base: i64,
    offset: i64,
}

impl FakeClock {
    fn new(world: &World) -> FakeClock {
        assert!(
            Path::new(LIBFAKETIME).exists(),
            "{LIBFAKETIME} is missing: install Debian's faketime package (scripts/setup-debian)"
        );
        let now = Timestamp::now().as_second();
        let base = now - now.rem_euclid(24 * HOUR) + 20 * 60 - now;
        let clock = FakeClock {
            file: world.path("faketime.rc"),
            base,
            offset: 0,
        };
        clock.write();
        clock
    }

    /// The oracle's environment: libfaketime reading the file at every call (no
    /// cache), the monotonic clock and file times left real.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LD_PRELOAD", LIBFAKETIME.to_string()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
            ("NO_FAKE_STAT", "1".into()),
        ]
    }

    /// Steps the oracle's clock to `offset` seconds from where it started (plus the
    /// time that passed since).
    fn step_to(&mut self, offset: i64) {
        self.offset = offset;
        self.write();
    }

    /// Writes `+N` / `-N` (seconds) atomically: the oracle never reads half a file.
    fn write(&self) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{:+}\n", self.base + self.offset))
            .expect("write the faketime file");
        std::fs::rename(&tmp, &self.file).expect("rename the faketime file");
    }

    /// What the oracle's clock reads now.
    fn now(&self) -> i64 {
        Timestamp::now().as_second() + self.base + self.offset
    }
}

/// Polls `f` until it holds or the deadline passes, then panics with the oracle's log.
fn eventually(oracle: &Oracle, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + DEADLINE;
    while !f() {
        assert!(
            Instant::now() < until,
            "{what}: not within {DEADLINE:?}\n{}",
            oracle.log_text()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The oracle's wall clock as `ctl status` shows it: when it started plus its uptime.
fn oracle_clock(oracle: &Oracle) -> i64 {
    let status = oracle.ctl_json(&["status"]);
    let started: Timestamp = status["started"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no start time in ctl status: {status:#}"));
    let uptime = status["uptime_secs"]
        .as_i64()
        .unwrap_or_else(|| panic!("no uptime in ctl status: {status:#}"));
    started.as_second() + uptime
}

/// Steps the clock and waits until the oracle reads the new time.
fn step(oracle: &Oracle, clock: &mut FakeClock, offset: i64) {
    clock.step_to(offset);
    eventually(
        oracle,
        &format!("the oracle's clock at {offset:+} s"),
        || (oracle_clock(oracle) - clock.now()).abs() <= 5,
    );
}

/// The oracle is alive, has not panicked and answers verdicts for an uninvolved account.
fn still_serving(oracle: &mut Oracle) {
    assert!(
        oracle.is_running(),
        "the oracle exited\n{}",
        oracle.log_text()
    );
    let log = oracle.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(oracle.ping());
    assert_eq!(
        oracle
            .request("auth user=bystander ip=192.0.2.44 result=ok")
            .as_deref(),
        Some("accept")
    );
}

/// One failure on the line protocol (no password hash: every one counts); the reply.
fn fail(oracle: &Oracle, user: &str, ip: &str) -> String {
    oracle
        .request(&format!("auth user={user} ip={ip} result=fail"))
        .expect("a verdict")
}

/// AUTH PLAIN through `exim -bh ip`; the reply code and text.
fn smtp_auth(exim: &Exim, ip: &str, user: &str, password: &str) -> (u16, String) {
    let session = exim.bh(ip, &Dialogue::auth_only(user, password));
    session.assert_oracle_answered();
    let reply = session.reply("AUTH");
    (reply.code, reply.text())
}

fn account(oracle: &Oracle, user: &str) -> Value {
    oracle.ctl_json(&["account", user])
}

/// Failed logins in the rule's window (0 for an account no longer tracked).
fn failures(oracle: &Oracle, user: &str) -> u64 {
    account(oracle, user)["failed_logins"]["count"]
        .as_u64()
        .unwrap_or(0)
}

/// The end of the account's hold in force, as Unix seconds.
fn hold_until(oracle: &Oracle, user: &str) -> Option<i64> {
    let a = account(oracle, user);
    let until = a["hold"]["until"].as_str()?;
    Some(
        until
            .parse::<Timestamp>()
            .unwrap_or_else(|e| panic!("hold until {until:?}: {e}"))
            .as_second(),
    )
}

#[test]
fn the_wall_clock_stepping_back_and_forward_an_hour_keeps_windows_and_holds_sane() {
    let world = World::new(&["alice", "carol", "dave", "erin"]);
    let mut clock = FakeClock::new(&world);
    let env = clock.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut oracle = Oracle::start_with_env(&world, CONFIG, &env);
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());
    eventually(&oracle, "the oracle runs on the faked clock", || {
        (oracle_clock(&oracle) - clock.now()).abs() <= 5
    });
    let start_day = jiff::Timestamp::from_second(clock.now())
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();

    // 00:20: three failures for alice (one a real SMTP AUTH), and a block for 30 min.
    assert_eq!(smtp_auth(&exim, "203.0.113.9", "alice", "wrong-1").0, 535);
    for _ in 0..2 {
        assert_eq!(fail(&oracle, "alice", "203.0.113.9"), "accept");
    }
    assert_eq!(failures(&oracle, "alice"), 3);
    oracle
        .ctl(&["block", "198.51.100.77", "--for", "30m"])
        .assert_success();
    assert!(
        oracle
            .request("connect ip=198.51.100.77")
            .is_some_and(|r| r.starts_with("deny ")),
        "the block is in force"
    );

    // Back an hour, to 23:20 the day before: the three still count, the fifth holds.
    step(&oracle, &mut clock, -HOUR);
    still_serving(&mut oracle);
    assert_eq!(failures(&oracle, "alice"), 3, "counted before the step");
    assert_eq!(fail(&oracle, "alice", "203.0.113.9"), "accept");
    assert_eq!(smtp_auth(&exim, "203.0.113.9", "alice", "wrong-2").0, 535);
    assert_eq!(failures(&oracle, "alice"), 5);
    let (code, text) = smtp_auth(&exim, "203.0.113.9", "alice", PASSWORD);
    assert_eq!(
        (code, text),
        (435, format!("{AUTH_DEFER_PREFIX}{HOLD_TEXT}")),
        "held across the step"
    );
    let until = hold_until(&oracle, "alice").expect("alice is held");
    assert!(
        (until - (clock.now() + 900)).abs() <= 30,
        "a 15-minute hold from the stepped clock: until {until}, clock {}",
        clock.now()
    );
    still_serving(&mut oracle);

    // Forward two hours, to 01:20: past the windows, the hold's and the block's ends.
    step(&oracle, &mut clock, HOUR);
    still_serving(&mut oracle);
    assert_eq!(hold_until(&oracle, "alice"), None, "the hold ended");
    assert_eq!(
        failures(&oracle, "alice"),
        0,
        "the old failures left the window"
    );
    assert_eq!(
        oracle.request("connect ip=198.51.100.77").as_deref(),
        Some("accept"),
        "the block ended"
    );
    let status = oracle.ctl_json(&["status"]);
    assert_eq!(status["in_force"]["holds"], serde_json::json!([]));
    assert_eq!(status["in_force"]["ip_blocks"], serde_json::json!([]));
    // A new failure is one, not a sixth: no hold; the right password gets in.
    assert_eq!(smtp_auth(&exim, "203.0.113.9", "alice", "wrong-3").0, 535);
    assert_eq!(failures(&oracle, "alice"), 1);
    assert_eq!(smtp_auth(&exim, "203.0.113.9", "alice", PASSWORD).0, 235);
    oracle.ctl(&["status"]).assert_success();
    oracle.ctl(&["account", "alice"]).assert_success();
    // What the next step back will find in its future: four failures of carol, one of
    // erin, and dave held for 15 minutes from 01:20.
    for _ in 0..4 {
        assert_eq!(fail(&oracle, "carol", "203.0.113.10"), "accept");
    }
    assert_eq!(fail(&oracle, "erin", "203.0.113.12"), "accept");
    for _ in 0..5 {
        assert_eq!(fail(&oracle, "dave", "203.0.113.11"), "accept");
    }
    let dave_until = hold_until(&oracle, "dave").expect("dave is held");

    // Back an hour again, to 00:20: what was stamped after it lies in the future.
    step(&oracle, &mut clock, 0);
    still_serving(&mut oracle);
    assert_eq!(
        failures(&oracle, "carol"),
        4,
        "failures ahead of the clock count"
    );
    assert_eq!(fail(&oracle, "carol", "203.0.113.10"), "accept");
    assert!(
        hold_until(&oracle, "carol").is_some(),
        "the fifth failure holds carol: {}",
        account(&oracle, "carol")
    );
    // Three failures of erin now: four in the window with the one of 01:20.
    for _ in 0..3 {
        assert_eq!(fail(&oracle, "erin", "203.0.113.12"), "accept");
    }
    assert_eq!(failures(&oracle, "erin"), 4);

    // Six minutes on, to 00:26: erin's three of 00:20 left the window, the one stamped
    // 01:20 has not; a new failure makes two, not a fifth that would hold erin.
    step(&oracle, &mut clock, 6 * 60);
    still_serving(&mut oracle);
    assert_eq!(failures(&oracle, "erin"), 1);
    assert_eq!(smtp_auth(&exim, "203.0.113.12", "erin", "wrong-4").0, 535);
    assert_eq!(failures(&oracle, "erin"), 2);
    assert_eq!(hold_until(&oracle, "erin"), None);
    assert_eq!(smtp_auth(&exim, "203.0.113.12", "erin", PASSWORD).0, 235);
    // dave's hold ends at the wall-clock time it names: more than an hour from now.
    assert_eq!(hold_until(&oracle, "dave"), Some(dave_until));
    assert!(dave_until - clock.now() > HOUR, "until {dave_until}");
    let (code, text) = smtp_auth(&exim, "203.0.113.11", "dave", PASSWORD);
    assert_eq!(
        (code, text),
        (435, format!("{AUTH_DEFER_PREFIX}{HOLD_TEXT}"))
    );
    oracle.ctl(&["release", "dave"]).assert_success();
    assert_eq!(smtp_auth(&exim, "203.0.113.11", "dave", PASSWORD).0, 235);
    let holds: Vec<String> = oracle.ctl_json(&["status"])["in_force"]["holds"]
        .as_array()
        .expect("holds")
        .iter()
        .map(|h| h["account"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(holds, ["carol"]);
    still_serving(&mut oracle);

    // The audit trail is one chain: the records of 23:20 went on in the open day's
    // segment, none into a segment of the day before.
    oracle.stop();
    let verified = audit(&world, &["verify"]);
    verified.assert_success();
    let day_before = start_day.yesterday().expect("a day before");
    let segments: Vec<String> = std::fs::read_dir(world.state_dir().join("audit"))
        .expect("the audit directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.starts_with("audit-"))
        .collect();
    assert_eq!(
        segments,
        [format!("audit-{start_day}.jsonl")],
        "no segment of {day_before}"
    );
    eprintln!("{}", verified.stdout_text());
}
