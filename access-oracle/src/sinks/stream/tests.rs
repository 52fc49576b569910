//! The audit stream's driver against a real trail (written by the writer's own code)
//! and an in-memory receiver that stops short when told to. Tests wait for effects
//! with a deadline; the driver's own pauses are made short, never waited out.

use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;

use jiff::Timestamp;

use super::*;
use crate::audit::record::Kind;
use crate::audit::{AuditConfig, Record, Source, Trail};

/// What the receiver does with the next batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Takes everything.
    Up,
    /// Takes at most this many records of each batch.
    Partial(usize),
    /// Takes nothing.
    Down,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<u64>>>,
    lines: Arc<Mutex<Vec<String>>>,
    mode: Arc<Mutex<Mode>>,
    calls: Arc<Mutex<u64>>,
}

impl Receiver {
    fn new(mode: Mode) -> Receiver {
        Receiver {
            got: Arc::default(),
            lines: Arc::default(),
            mode: Arc::new(Mutex::new(mode)),
            calls: Arc::default(),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn got(&self) -> Vec<u64> {
        self.got.lock().unwrap().clone()
    }

    fn calls(&self) -> u64 {
        *self.calls.lock().unwrap()
    }
}

impl Forward for Receiver {
    fn forward<'a>(&'a mut self, batch: &'a [AuditItem]) -> super::super::Forwarding<'a> {
        Box::pin(async move {
            *self.calls.lock().unwrap() += 1;
            let n = match *self.mode.lock().unwrap() {
                Mode::Up => batch.len(),
                Mode::Partial(k) => k.min(batch.len()),
                Mode::Down => 0,
            };
            for item in &batch[..n] {
                self.got.lock().unwrap().push(item.record.seq);
                self.lines.lock().unwrap().push(item.line.clone());
            }
            n
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: PathBuf,
    config: AuditConfig,
    trail: Option<Trail>,
    next_user: u64,
}

impl Fixture {
    fn new(encrypt: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_path_buf();
        let config = AuditConfig {
            encrypt,
            // Flushed when the test says so.
            sync_interval_ms: 60_000,
            ..AuditConfig::default()
        };
        let trail = Trail::open(&config, &state, Timestamp::now()).unwrap();
        Fixture {
            _dir: dir,
            state,
            config,
            trail: Some(trail),
            next_user: 0,
        }
    }

    /// Writes `n` records and flushes them; returns the trail's last seq.
    fn write(&mut self, n: usize) -> u64 {
        let trail = self.trail.as_mut().unwrap();
        let now = Timestamp::now();
        let mut records: Vec<Record> = (0..n)
            .map(|_| {
                self.next_user += 1;
                Record::new(Kind::Auth, Source::Live, now).user(&format!("user{}", self.next_user))
            })
            .collect();
        trail.append(&mut records, now).unwrap();
        trail.sync().unwrap();
        trail.seq()
    }

    fn ctx(&self) -> BuildContext {
        BuildContext::new(
            self.state.clone(),
            self.state.join("alerts.jsonl"),
            &self.config,
        )
    }

    fn plan(&self, start_at: StartAt) -> Plan {
        let mut table = SinkTable::new("siem", "file");
        table.stream = Stream::Audit;
        table.start_at = start_at;
        let mut plan = Plan::of(&table, &self.ctx()).unwrap();
        plan.timing = Timing {
            poll: Duration::from_millis(5),
            first_pause: Duration::from_millis(2),
            max_pause: Duration::from_millis(20),
        };
        plan
    }
}

struct Driver {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<SinkCounters>,
}

fn start(plan: Plan, receiver: &Receiver) -> Driver {
    let (stop, stop_rx) = watch::channel(false);
    let counters = Arc::new(SinkCounters::new("siem", "file"));
    let task = tokio::spawn(run(
        plan,
        Box::new(receiver.clone()),
        counters.clone(),
        stop_rx,
    ));
    Driver {
        stop,
        task,
        counters,
    }
}

impl Driver {
    async fn stop(self) -> Arc<SinkCounters> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the driver stops when told")
            .unwrap();
        self.counters
    }

    fn count(&self, f: impl Fn(&SinkCounters) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.counters).load(Ordering::Relaxed)
    }
}

/// Waits until `done` holds, for at most 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The saved position (a default one before the first is saved).
fn saved(f: &Fixture) -> Saved {
    match std::fs::read_to_string(position_file(&f.state, "siem")) {
        Ok(text) => serde_json::from_str(&text).unwrap(),
        Err(_) => Saved {
            seq: 0,
            chain: String::new(),
            file: String::new(),
            offset: 0,
        },
    }
}

#[tokio::test]
async fn every_record_arrives_in_order_through_partial_deliveries_and_an_outage() {
    let mut f = Fixture::new(false);
    let last = f.write(10);
    let receiver = Receiver::new(Mode::Partial(3));
    let driver = start(f.plan(StartAt::Beginning), &receiver);
    until("the first records", || receiver.got().len() as u64 == last).await;
    assert_eq!(receiver.got(), (1..=last).collect::<Vec<_>>());
    // 11 records, 3 at a time: stopped short three times and offered the rest again.
    assert!(driver.count(|c| &c.retried) >= 3);
    until("the position", || saved(&f).seq == last).await;
    until("the count", || driver.count(|c| &c.delivered) == last).await;
    until("no lag", || driver.count(|c| &c.queued) == 0).await;

    // The receiver goes down: nothing is delivered, the driver keeps offering.
    receiver.set(Mode::Down);
    let calls = receiver.calls();
    let last = f.write(50);
    until("offers while down", || receiver.calls() >= calls + 3).await;
    assert_eq!(receiver.got().len(), 11);
    until("the lag", || driver.count(|c| &c.queued) == 50).await;
    assert_eq!(
        saved(&f).seq,
        11,
        "the position stays at the last delivered"
    );
    // Back up: everything arrives, in order, once.
    receiver.set(Mode::Up);
    until("the rest", || receiver.got().len() as u64 == last).await;
    assert_eq!(receiver.got(), (1..=last).collect::<Vec<_>>());
    until("the position", || saved(&f).seq == last).await;
    let counters = driver.stop().await;
    assert_eq!(counters.failed.load(Ordering::Relaxed), 0);
    // The state's modes: 0700 directory, 0600 file.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.state.join("sinks")), 0o700);
    assert_eq!(mode(&position_file(&f.state, "siem")), 0o600);
}

#[tokio::test]
async fn a_restart_resumes_after_the_saved_position() {
    let mut f = Fixture::new(true);
    let first = f.write(5);
    let receiver = Receiver::new(Mode::Up);
    let driver = start(f.plan(StartAt::Beginning), &receiver);
    until("the first records", || receiver.got().len() as u64 == first).await;
    until("the position", || saved(&f).seq == first).await;
    driver.stop().await;
    // Written while the sink was stopped, across a new day file's start too.
    let last = f.write(7);
    let again = Receiver::new(Mode::Up);
    let driver = start(f.plan(StartAt::Beginning), &again);
    until("the rest", || again.got().len() as u64 == last - first).await;
    assert_eq!(again.got(), (first + 1..=last).collect::<Vec<_>>());
    // Encrypted records are forwarded decrypted, with their chain.
    let line: serde_json::Value =
        serde_json::from_str(again.lines.lock().unwrap().last().unwrap()).unwrap();
    assert_eq!(line["user"], "user12");
    assert_eq!(line["seq"], last);
    assert_eq!(line["chain"].as_str().unwrap().len(), 64);
    driver.stop().await;
    // Resumed by number when the file named is gone (the fast path misses).
    let mut s = saved(&f);
    s.file = "audit-2000-01-01.jsonl".into();
    std::fs::write(
        position_file(&f.state, "siem"),
        serde_json::to_string(&s).unwrap(),
    )
    .unwrap();
    let last = f.write(2);
    let third = Receiver::new(Mode::Up);
    let driver = start(f.plan(StartAt::Beginning), &third);
    until("the newest", || third.got().len() == 2).await;
    assert_eq!(third.got(), [last - 1, last]);
    driver.stop().await;
}

#[tokio::test]
async fn records_not_flushed_are_not_forwarded() {
    let mut f = Fixture::new(false);
    let flushed = f.write(3);
    // Written, not flushed: the head still names the 4th record.
    let now = Timestamp::now();
    f.trail
        .as_mut()
        .unwrap()
        .append(
            &mut [Record::new(Kind::Auth, Source::Live, now).user("late")],
            now,
        )
        .unwrap();
    let receiver = Receiver::new(Mode::Up);
    let driver = start(f.plan(StartAt::Beginning), &receiver);
    until("the flushed records", || {
        receiver.got().len() as u64 == flushed
    })
    .await;
    let calls = receiver.calls();
    // Several more looks at the trail's end find nothing new to offer.
    until("polls", || {
        let a = std::fs::read_to_string(f.config.dir(&f.state).join("head.json")).unwrap();
        a.contains(&format!("\"seq\":{flushed}"))
    })
    .await;
    assert_eq!(receiver.calls(), calls);
    f.trail.as_mut().unwrap().sync().unwrap();
    until("the late record", || {
        receiver.got().len() as u64 == flushed + 1
    })
    .await;
    driver.stop().await;
}

#[tokio::test]
async fn a_damaged_position_is_set_aside_and_the_stream_starts_over() {
    let mut f = Fixture::new(false);
    let last = f.write(4);
    let path = position_file(&f.state, "siem");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, "{\"seq\": 3, \"chain\": \"not hex\"").unwrap();
    let receiver = Receiver::new(Mode::Up);
    let driver = start(f.plan(StartAt::Beginning), &receiver);
    until("everything", || receiver.got().len() as u64 == last).await;
    assert_eq!(receiver.got(), (1..=last).collect::<Vec<_>>());
    assert_eq!(
        std::fs::read_to_string(path.with_extension("position.bad")).unwrap(),
        "{\"seq\": 3, \"chain\": \"not hex\""
    );
    until("a new position", || saved(&f).seq == last).await;
    driver.stop().await;
}

#[tokio::test]
async fn a_new_sink_may_start_at_the_end() {
    let mut f = Fixture::new(false);
    let before = f.write(6);
    let receiver = Receiver::new(Mode::Up);
    let driver = start(f.plan(StartAt::End), &receiver);
    until("the position at the end", || saved(&f).seq == before).await;
    let last = f.write(2);
    until("the new records", || receiver.got().len() == 2).await;
    assert_eq!(receiver.got(), [last - 1, last]);
    driver.stop().await;
    // Once it has a position, start_at no longer matters.
    let last = f.write(1);
    let again = Receiver::new(Mode::Up);
    let driver = start(f.plan(StartAt::Beginning), &again);
    until("the next", || again.got() == [last]).await;
    driver.stop().await;
}

#[tokio::test]
async fn the_driver_stops_while_the_receiver_is_down() {
    let mut f = Fixture::new(false);
    f.write(3);
    let receiver = Receiver::new(Mode::Down);
    let mut plan = f.plan(StartAt::Beginning);
    // A long pause: the stop must not wait it out.
    plan.timing.first_pause = Duration::from_secs(3600);
    plan.timing.max_pause = Duration::from_secs(3600);
    let driver = start(plan, &receiver);
    until("an offer", || receiver.calls() >= 1).await;
    driver.stop().await;
    assert!(!position_file(&f.state, "siem").exists());
}

#[test]
fn stream_audit_needs_a_forwarding_type_and_the_trail() {
    let problems = |text: &str, audit: &AuditConfig| {
        let raw: crate::config::RawConfig = toml::from_str(text).unwrap();
        let ctx = BuildContext::new("/srv/s".into(), "/srv/s/alerts.jsonl".into(), audit);
        let mut p = Vec::new();
        super::super::validate(&raw.sinks, &ctx, &mut p);
        p
    };
    let on = AuditConfig::default();
    let log = "[[sinks]]\nname = \"log\"\ntype = \"log\"\nstream = \"audit\"\n";
    assert_eq!(
        problems(log, &on),
        [
            "sinks[0] (log): type = \"log\" cannot forward the audit trail (stream = \"audit\"): it delivers alerts only"
        ]
    );
    let file = "[[sinks]]\nname = \"siem\"\ntype = \"file\"\nstream = \"audit\"\npath = \"/var/log/a.jsonl\"\nformat = \"ecs\"\nstart_at = \"end\"\n";
    assert_eq!(problems(file, &on), Vec::<String>::new());
    let off = AuditConfig {
        enabled: false,
        ..AuditConfig::default()
    };
    assert_eq!(
        problems(file, &off),
        [
            "sinks[0] (siem): stream = \"audit\" forwards the audit trail, which is off ([audit] enabled = false)"
        ]
    );
    let alerts = "[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"/var/log/b.jsonl\"\nstart_at = \"end\"\n";
    assert_eq!(
        problems(alerts, &on),
        ["sinks[0] (a): start_at applies to stream = \"audit\" only"]
    );
}

/// A file sink (ECS) and an exec sink (the trail's lines) with `stream = "audit"`, built
/// from their `[[sinks]]` tables as `serve` builds them: both get every record, the exec
/// one again after its command failed, and neither gets alerts.
#[tokio::test]
async fn file_and_exec_sinks_forward_the_trail_and_get_no_alerts() {
    let mut f = Fixture::new(false);
    let first = f.write(3);
    let dir = &f.state;
    let ecs_file = dir.join("siem/audit-ecs.jsonl");
    let out = dir.join("exec.out");
    let flag = dir.join("receiver-down");
    let script = dir.join("receive.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e {flag} ]; then echo down >&2; exit 1; fi\ncat >> {out}\n",
            flag = flag.display(),
            out = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let raw: crate::config::RawConfig = toml::from_str(&format!(
        r#"
        [[sinks]]
        name = "siem"
        type = "file"
        stream = "audit"
        path = "{ecs}"
        format = "ecs"

        [[sinks]]
        name = "shipper"
        type = "exec"
        stream = "audit"
        command = ["{script}"]
        "#,
        ecs = ecs_file.display(),
        script = script.display()
    ))
    .unwrap();
    let sinks = super::super::Sinks::build(&raw.sinks, &f.ctx()).unwrap();
    assert_eq!(sinks.names(), ["alerts", "log", "siem", "shipper"]);
    let counters = sinks.counters();
    let (tx, rx) = tokio::sync::mpsc::channel(10);
    let running = sinks.start(rx);
    let lines = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let seqs = |docs: &[serde_json::Value], at: &str| -> Vec<u64> {
        docs.iter()
            .map(|d| d.pointer(at).and_then(|v| v.as_u64()).unwrap())
            .collect()
    };
    until("the ECS file", || lines(&ecs_file).len() as u64 == first).await;
    until("the command", || lines(&out).len() as u64 == first).await;
    let docs = lines(&ecs_file);
    assert_eq!(seqs(&docs, "/event/sequence"), [1, 2, 3, 4]);
    assert_eq!(
        docs[1]["event"]["category"],
        serde_json::json!(["authentication"])
    );
    assert_eq!(docs[1]["user"]["name"], "user1");
    assert_eq!(docs[1]["event"]["id"].as_str().unwrap().len(), 64);
    assert_eq!(seqs(&lines(&out), "/seq"), [1, 2, 3, 4]);
    // An alert goes to the alert sinks only.
    let time = Timestamp::now();
    tx.send(Arc::new(crate::alert::Alert {
        time,
        rule: "failed_logins_account",
        severity: crate::rules::Severity::High,
        account: Some("alice".into()),
        ip: None,
        rdns: None,
        protocol: None,
        count: 5,
        counts: serde_json::json!({}),
        threshold: 5,
        window_secs: 300,
        response: crate::rules::Response::Alert,
        expires: time,
        summary: "an alert".into(),
        group: None,
        context: None,
        observed: false,
    }))
    .await
    .unwrap();
    until("the alert file", || {
        lines(&dir.join("alerts.jsonl")).len() == 1
    })
    .await;
    // The command fails while the flag is there: offered again, after pauses.
    std::fs::write(&flag, "").unwrap();
    let last = f.write(4);
    until("the ECS file", || lines(&ecs_file).len() as u64 == last).await;
    until("a retry", || {
        counters[3].retried.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert_eq!(lines(&out).len() as u64, first);
    assert_eq!(counters[3].queued.load(Ordering::Relaxed), last - first);
    std::fs::remove_file(&flag).unwrap();
    until("the command", || lines(&out).len() as u64 == last).await;
    assert_eq!(seqs(&lines(&out), "/seq"), (1..=last).collect::<Vec<_>>());
    assert_eq!(
        seqs(&lines(&ecs_file), "/event/sequence"),
        (1..=last).collect::<Vec<_>>()
    );
    assert!(running.stop(Duration::from_secs(5)).await.is_empty());
    assert_eq!(counters[2].delivered.load(Ordering::Relaxed), last);
    assert_eq!(counters[3].delivered.load(Ordering::Relaxed), last);
    assert_eq!(counters[0].delivered.load(Ordering::Relaxed), 1);
}
