//! Alert sinks fed by the real engine: a sink that hangs holds only itself. The engine
//! answers every request and the JSON-lines file gets every alert while another sink
//! is stuck; the stuck one drops exactly what overflowed its queue. Shown by counts;
//! nothing here sleeps.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use access_oracle::alert::Alert;
use access_oracle::config::{Config, RawConfig};
use access_oracle::engine::Engine;
use access_oracle::protocol::parse_line;
use access_oracle::rules::Severity;
use access_oracle::sinks::{
    BuildContext, Delivery, Outcome, Settings, Sink, SinkCounters, SinkTable, Sinks, WhenFull,
};
use jiff::Timestamp;
use tokio::sync::{Notify, oneshot};

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn build(config: &Config) -> Result<Sinks, access_oracle::sinks::BuildError> {
    let ctx = BuildContext::new(
        config.state_dir.clone(),
        config.alert_file.clone(),
        &config.raw.audit,
    );
    Sinks::build(&config.raw.sinks, &ctx)
}

fn config(state_dir: &Path, sinks: &str) -> Config {
    let text = format!("[server]\nstate_dir = \"{}\"\n{sinks}", state_dir.display());
    let raw: RawConfig = toml::from_str(&text).unwrap();
    Config::from_raw(raw).unwrap()
}

/// Five wrong passwords for `user` from its own address: one alert
/// (`failed_logins_account`), every request answered.
fn brute_force(engine: &Engine, n: u32) {
    for i in 0..5 {
        let line = format!("auth user=user{n} ip=2001:db8::{n:x} result=fail pwhash=00{i:02}");
        let reply = engine.handle(&parse_line(line.as_bytes()).unwrap(), t(i64::from(i)));
        assert_eq!(reply.to_string(), "accept", "{line}");
    }
}

/// Hangs on its first batch until released; records what it delivers.
struct Hung {
    entered: Option<oneshot::Sender<usize>>,
    release: Arc<Notify>,
    delivered: Arc<Mutex<Vec<String>>>,
}

impl Sink for Hung {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            if let Some(entered) = self.entered.take() {
                let _ = entered.send(batch.len());
                self.release.notified().await;
            }
            let mut d = self.delivered.lock().unwrap();
            d.extend(batch.iter().map(|a| a.account.clone().unwrap_or_default()));
            Outcome {
                delivered: batch.len() as u64,
                ..Outcome::default()
            }
        })
    }
}

struct Setup {
    engine: Engine,
    running: access_oracle::sinks::Running,
    file: Arc<SinkCounters>,
    hung: Arc<SinkCounters>,
    entered: oneshot::Receiver<usize>,
    release: Arc<Notify>,
    hung_delivered: Arc<Mutex<Vec<String>>>,
}

const HUNG_QUEUE: u64 = 8;

fn setup(state_dir: &Path, when_full: WhenFull) -> Setup {
    // The real file sink from the config (its queue holds every alert of the test).
    let config = config(
        state_dir,
        "[[sinks]]\nname = \"alerts\"\ntype = \"file\"\nmin_severity = \"info\"\nqueue_capacity = 4096\n",
    );
    let mut sinks = build(&config).unwrap();
    assert_eq!(sinks.names(), ["log", "alerts"]);
    let (entered_tx, entered) = oneshot::channel();
    let release = Arc::new(Notify::new());
    let hung_delivered = Arc::new(Mutex::new(Vec::new()));
    let table = SinkTable {
        min_severity: Severity::Info,
        queue_capacity: HUNG_QUEUE as usize,
        when_full,
        ..SinkTable::new("hung", "test")
    };
    sinks.add(
        Settings::of(&table, "test"),
        Box::new(Hung {
            entered: Some(entered_tx),
            release: release.clone(),
            delivered: hung_delivered.clone(),
        }),
    );
    let counters = sinks.counters();
    let (engine, alerts) = Engine::new(&config, t(0));
    engine.stats.set_sinks(counters.clone());
    let running = sinks.start(alerts);
    Setup {
        engine,
        running,
        file: counters[1].clone(),
        hung: counters[2].clone(),
        entered,
        release,
        hung_delivered,
    }
}

/// Waits for `check` with a deadline (polling; never a fixed sleep).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const ACCOUNTS: u32 = 200;

/// Raises one alert, waits until the hung sink holds it, then raises the others.
async fn raise_with_one_sink_hung(s: &mut Setup) -> u64 {
    brute_force(&s.engine, 0);
    let first = tokio::time::timeout(Duration::from_secs(20), &mut s.entered)
        .await
        .expect("the hung sink got its first batch")
        .unwrap();
    assert_eq!(first, 1);
    for n in 1..ACCOUNTS {
        brute_force(&s.engine, n);
    }
    let raised = s.engine.stats.alerts_raised.load(Ordering::Relaxed);
    assert_eq!(raised, u64::from(ACCOUNTS), "one alert per account");
    raised
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sink_delays_neither_the_engine_nor_the_file_sink() {
    for when_full in [WhenFull::DropNewest, WhenFull::DropOldest] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = setup(dir.path(), when_full);
        let raised = raise_with_one_sink_hung(&mut s).await;
        // Every request was answered above; the engine's own queue never overflowed.
        assert_eq!(s.engine.stats.alerts_dropped.load(Ordering::Relaxed), 0);
        // The file sink delivers all of them while the other sink is stuck.
        eventually("the file sink delivers every alert", || {
            s.file.delivered.load(Ordering::Relaxed) == raised
        })
        .await;
        let written = lines(&dir.path().join("alerts.jsonl"));
        assert_eq!(written.len() as u64, raised);
        assert_eq!(written[0]["account"], "user0");
        assert_eq!(s.file.dropped.load(Ordering::Relaxed), 0);
        // The fan-out offers each alert to every sink in turn, never waiting: the hung
        // one holds one, its queue is full, the rest were dropped.
        eventually("the hung sink is offered every alert", || {
            let h = s.hung.snapshot();
            h.queued + h.dropped == raised - 1
        })
        .await;
        let hung = s.hung.snapshot();
        assert_eq!(
            (hung.delivered, hung.queued, hung.dropped),
            (0, HUNG_QUEUE, raised - 1 - HUNG_QUEUE),
            "{when_full:?}"
        );
        let snapshot = s.engine.stats.snapshot();
        assert_eq!(
            snapshot
                .sinks
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["log", "alerts", "hung"]
        );
        assert_eq!(snapshot.sinks[2].dropped, raised - 1 - HUNG_QUEUE);
        // Released, it delivers what it held and what its queue kept: the first ones
        // (drop_newest) or the last ones (drop_oldest).
        s.release.notify_one();
        eventually("the released sink delivers its queue", || {
            s.hung.delivered.load(Ordering::Relaxed) == 1 + HUNG_QUEUE
        })
        .await;
        let kept: Vec<u32> = match when_full {
            WhenFull::DropNewest => (1..=HUNG_QUEUE as u32).collect(),
            WhenFull::DropOldest => (ACCOUNTS - HUNG_QUEUE as u32..ACCOUNTS).collect(),
        };
        let expect: Vec<String> = std::iter::once(0)
            .chain(kept)
            .map(|n| format!("user{n}"))
            .collect();
        assert_eq!(*s.hung_delivered.lock().unwrap(), expect, "{when_full:?}");
        let busy = s.running.stop(Duration::from_secs(20)).await;
        assert!(busy.is_empty(), "{busy:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_every_sink_and_names_the_one_still_busy_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = setup(dir.path(), WhenFull::DropNewest);
    let raised = raise_with_one_sink_hung(&mut s).await;
    // Stopped at once: what the engine queued still reaches the file before the
    // deadline; the hung sink never returns and is named.
    let busy = s.running.stop(Duration::from_millis(500)).await;
    assert_eq!(busy, ["hung"]);
    assert_eq!(s.file.delivered.load(Ordering::Relaxed), raised);
    assert_eq!(lines(&dir.path().join("alerts.jsonl")).len() as u64, raised);
}

#[test]
fn without_sinks_the_alert_file_and_the_log_line_are_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let sinks = build(&config(dir.path(), "")).unwrap();
    assert_eq!(sinks.names(), ["alerts", "log"]);
    let kinds: Vec<&str> = sinks.counters().iter().map(|c| c.kind).collect();
    assert_eq!(kinds, ["file", "log"]);
    // Opened at build: a wrong path is reported at start.
    assert!(dir.path().join("alerts.jsonl").exists());
    let elsewhere = dir.path().join("elsewhere/alerts.jsonl");
    let c = config(
        dir.path(),
        &format!("[alerts]\nfile = \"{}\"\n", elsewhere.display()),
    );
    build(&c).unwrap();
    assert!(
        elsewhere.exists(),
        "[alerts] file still names the default file sink"
    );
}

#[test]
fn a_sink_that_cannot_be_opened_stops_the_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let c = config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"copy\"\ntype = \"file\"\npath = \"{}/alerts.jsonl\"\n",
            blocker.display()
        ),
    );
    let err = build(&c).err().expect("the start is refused").to_string();
    assert!(err.starts_with("sink copy ("), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_configured_sinks_and_shows_their_counters() {
    use access_oracle::config::Overrides;
    use access_oracle::server::{self, ConfigSource};
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy/alerts.jsonl");
    let mut raw: RawConfig = toml::from_str(&format!(
        "[[sinks]]\nname = \"copy\"\ntype = \"file\"\npath = \"{}\"\nmin_severity = \"critical\"\n",
        copy.display()
    ))
    .unwrap();
    Overrides {
        exim_socket: Some(dir.path().join("exim.sock")),
        admin_socket: Some(dir.path().join("admin.sock")),
        state_dir: Some(dir.path().join("state")),
    }
    .apply(&mut raw);
    let running = server::start(
        Config::from_raw(raw).unwrap(),
        ConfigSource {
            path: None,
            overrides: Overrides::default(),
        },
    )
    .await
    .unwrap();
    let engine = running.engine.clone();
    brute_force(&engine, 1);
    let names = |e: &Engine| -> Vec<(String, &'static str, u64)> {
        e.stats
            .snapshot()
            .sinks
            .into_iter()
            .map(|s| (s.name, s.kind, s.delivered))
            .collect()
    };
    // failed_logins_account is "high": the defaults take it, "copy" (critical) does not.
    eventually("the defaults deliver the alert", || {
        names(&engine)
            == [
                ("alerts".to_string(), "file", 1),
                ("log".to_string(), "log", 1),
                ("copy".to_string(), "file", 0),
            ]
    })
    .await;
    assert_eq!(lines(&dir.path().join("state/alerts.jsonl")).len(), 1);
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "");
    running.stop().await.unwrap();
}

/// `check-config` and `serve`'s preflight look at a file sink's own path as `serve`
/// would open it: a device, or a path under a regular file, is a problem naming the
/// sink (before, only the default alert file was looked at).
#[test]
fn the_preflight_looks_at_each_file_sinks_path() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    let fine = dir.path().join("new/dir/alerts.jsonl");
    let config = config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"zero\"\ntype = \"file\"\npath = \"/dev/zero\"\n\n\
             [[sinks]]\nname = \"nowhere\"\ntype = \"file\"\npath = \"{}/alerts.jsonl\"\n\n\
             [[sinks]]\nname = \"fine\"\ntype = \"file\"\npath = \"{}\"\n",
            plain.display(),
            fine.display()
        ),
    );
    let preflight = access_oracle::server::preflight::run(&config);
    let problems: Vec<String> = match preflight.into_result() {
        Ok(_) => panic!("two sinks cannot be opened"),
        Err(p) => p.list().to_vec(),
    };
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("sink zero: path /dev/zero is a character device")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with("sink nowhere: path ")
            && p.contains("is a regular file, not a directory")),
        "{problems:?}"
    );
    assert!(
        !problems.iter().any(|p| p.contains("sink fine")),
        "{problems:?}"
    );
    assert!(!fine.exists(), "the preflight creates nothing");
}

/// `[alerts] file` and a sink named `alerts` with its own `path` disagree about where
/// the alert file is: refused, rather than one silently winning.
#[test]
fn two_places_for_the_alert_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nstate_dir = \"{}\"\n[alerts]\nfile = \"/tmp/a.jsonl\"\n\
         [[sinks]]\nname = \"alerts\"\ntype = \"file\"\npath = \"/tmp/b.jsonl\"\n",
        dir.path().display()
    );
    let raw: RawConfig = toml::from_str(&text).unwrap();
    let problems = Config::from_raw(raw).unwrap_err();
    assert!(
        problems
            .list()
            .iter()
            .any(|p| p.contains("alerts.file (/tmp/a.jsonl) and the path of the sink named alerts")),
        "{problems}"
    );
}

/// `type = "exec"`: each alert's JSON on a real command's standard input, the command
/// run without a shell (an account name with shell syntax stays text); a command that
/// fails or hangs past its timeout fails the alert (counted), and is not retried when
/// `retries = 0`.
#[tokio::test]
async fn exec_runs_the_command_with_each_alert_and_counts_failures() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got.jsonl");
    let script = dir.path().join("take-alert");
    std::fs::write(&script, format!("#!/bin/sh\ncat >> {}\n", out.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"ok\"\ntype = \"exec\"\ncommand = [\"{}\"]\nretries = 0\n\n\
             [[sinks]]\nname = \"fails\"\ntype = \"exec\"\ncommand = [\"/bin/false\"]\nretries = 0\n\n\
             [[sinks]]\nname = \"hangs\"\ntype = \"exec\"\ncommand = [\"/bin/sleep\", \"30\"]\ntimeout_ms = 200\nretries = 0\n",
            script.display()
        ),
    );
    assert!(
        access_oracle::server::preflight::run(&config)
            .into_result()
            .is_ok()
    );
    let sinks = build(&config).unwrap();
    assert_eq!(sinks.names(), ["alerts", "log", "ok", "fails", "hangs"]);
    let counters = sinks.counters();
    let (engine, alerts) = Engine::new(&config, t(0));
    let running = sinks.start(alerts);
    // Three accounts held, one with a name that would be shell syntax.
    for n in 1..=2 {
        brute_force(&engine, n);
    }
    for i in 0..5 {
        let line =
            format!("auth user=\"$(touch /tmp/pwned);x\" ip=192.0.2.9 result=fail pwhash=00{i:02}");
        engine.handle(&parse_line(line.as_bytes()).unwrap(), t(i));
    }
    let got = |i: usize| counters[i].snapshot();
    eventually("the exec sinks", || {
        got(2).delivered == 3 && got(3).failed == 3 && got(4).failed == 3
    })
    .await;
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|a| a["rule"] == "failed_logins_account"));
    assert!(
        lines
            .iter()
            .any(|a| a["account"] == "$(touch /tmp/pwned);x")
    );
    assert!(!Path::new("/tmp/pwned").exists(), "no shell ran the name");
    assert_eq!((got(3).delivered, got(3).retried), (0, 0));
    running.stop(Duration::from_secs(5)).await;
}

#[test]
fn exec_refuses_a_program_that_is_not_an_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nstate_dir = \"{}\"\n[[sinks]]\nname = \"x\"\ntype = \"exec\"\ncommand = [\"page-me\"]\n",
        dir.path().display()
    );
    let raw: RawConfig = toml::from_str(&text).unwrap();
    let problems = Config::from_raw(raw).unwrap_err();
    assert!(
        problems
            .list()
            .iter()
            .any(|p| p.contains("must be an absolute path")),
        "{problems}"
    );
}
