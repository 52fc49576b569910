//! The sink components: config checks, the queue's policies, the file sink's lines and
//! rotation, the fan-out by severity. Nothing here sleeps.

use std::sync::atomic::Ordering;

use jiff::Timestamp;

use super::*;
use crate::config::{Config, RawConfig};
use crate::rules::Response;

fn alert(n: u64, severity: Severity) -> Arc<Alert> {
    let time = Timestamp::from_second(1_800_000_000).unwrap();
    Arc::new(Alert {
        time,
        rule: "failed_logins_account",
        severity,
        account: Some(format!("user{n}")),
        ip: None,
        rdns: None,
        protocol: Some("smtp".into()),
        count: n,
        counts: serde_json::json!({ "failed_logins": n }),
        threshold: 5,
        window_secs: 300,
        response: Response::Alert,
        expires: time,
        summary: format!("alert {n}"),
        group: None,
        context: None,
        observed: false,
    })
}

fn ctx(dir: &Path) -> BuildContext {
    BuildContext::new(
        dir.to_path_buf(),
        dir.join("alerts.jsonl"),
        &crate::audit::AuditConfig::default(),
    )
}

fn sinks_from(toml_text: &str) -> Vec<SinkTable> {
    let raw: RawConfig = toml::from_str(toml_text).unwrap();
    raw.sinks
}

fn problems_of(toml_text: &str) -> Vec<String> {
    let mut p = Vec::new();
    validate(
        &sinks_from(toml_text),
        &ctx(Path::new("/var/lib/access-oracle")),
        &mut p,
    );
    p
}

#[test]
fn without_sinks_the_defaults_are_the_alert_file_and_the_log() {
    let plan = planned(&[]);
    let names: Vec<_> = plan
        .iter()
        .map(|t| (t.name.as_str(), t.kind.as_str()))
        .collect();
    assert_eq!(names, [("alerts", "file"), ("log", "log")]);
    // Every severity, as before sinks were configurable.
    assert!(plan.iter().all(|t| t.min_severity == Severity::Info));
    let mut p = Vec::new();
    let checked = validate(&[], &ctx(Path::new("/srv/state")), &mut p);
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(
        checked[0].config.target(&ctx(Path::new("/srv/state"))),
        "/srv/state/alerts.jsonl"
    );
}

#[test]
fn an_entry_named_like_a_default_replaces_it() {
    let tables = sinks_from(
        r#"
        [[sinks]]
        name = "alerts"
        type = "file"
        max_bytes = 1048576
        min_severity = "high"
        queue_capacity = 10
        when_full = "drop_oldest"
        "#,
    );
    let plan = planned(&tables);
    assert_eq!(plan.len(), 2);
    assert_eq!(plan[0].name, "log");
    let alerts = &plan[1];
    assert_eq!(
        (alerts.min_severity, alerts.queue_capacity, alerts.when_full),
        (Severity::High, 10, WhenFull::DropOldest)
    );
    assert_eq!(
        alerts.options.get("max_bytes").and_then(|v| v.as_integer()),
        Some(1_048_576)
    );
}

#[test]
fn common_settings_have_their_defaults() {
    let t = &sinks_from("[[sinks]]\nname = \"x\"\ntype = \"log\"\n")[0];
    assert_eq!(t.min_severity, Severity::Low);
    assert_eq!(t.queue_capacity, 1024);
    assert_eq!(t.when_full, WhenFull::DropNewest);
    assert!(t.options.is_empty());
}

#[test]
fn every_problem_is_reported_with_the_sink_it_belongs_to() {
    let p = problems_of(
        r#"
        [[sinks]]
        name = "a b"
        type = "pigeon"

        [[sinks]]
        name = "copy"
        type = "file"
        pth = "/tmp/x"

        [[sinks]]
        name = "copy"
        type = "file"
        path = "relative.jsonl"
        max_bytes = 10
        keep = 0
        queue_capacity = 0

        [[sinks]]
        name = "second"
        type = "file"
        path = "/var/lib/access-oracle/alerts.jsonl"

        [[sinks]]
        name = "json"
        type = "file"
        path = "/tmp/a.jsonl"
        format = "xml"
        "#,
    );
    let expect = [
        "sinks[0] (a b): name must be 1 to 32 letters",
        "sinks[0] (a b): unknown type \"pigeon\"; known: ",
        "sinks[1] (copy): unknown field `pth`",
        "sinks[2] (copy): the name is used by another sink",
        "sinks[2] (copy): queue_capacity must be between 1 and 1000000, got 0",
        "sinks[2] (copy): path must be an absolute path, got relative.jsonl",
        "sinks[2] (copy): max_bytes must be 0 (never rotate) or at least 4096, got 10",
        "sinks[2] (copy): keep must be between 1 and 1000, got 0",
        "sinks[3] (second): /var/lib/access-oracle/alerts.jsonl is already the target of sink alerts",
        "sinks[4] (json): unknown variant `xml`",
    ];
    assert_eq!(p.len(), expect.len(), "{p:#?}");
    for (got, want) in p.iter().zip(expect) {
        assert!(got.starts_with(want), "{got:?} should start with {want:?}");
    }
}

#[test]
fn config_validation_refuses_a_bad_sink_with_the_others() {
    let raw: RawConfig =
        toml::from_str("[alerts]\nqueue_capacity = 0\n[[sinks]]\nname = \"x\"\ntype = \"nope\"\n")
            .unwrap();
    let problems = Config::from_raw(raw).unwrap_err();
    let text = problems.to_string();
    assert!(text.contains("alerts.queue_capacity"), "{text}");
    assert!(text.contains("(x): unknown type \"nope\""), "{text}");
}

fn counters() -> Arc<SinkCounters> {
    Arc::new(SinkCounters::new("t", "test"))
}

#[tokio::test]
async fn a_full_queue_drops_the_newest_or_the_oldest_and_counts_it() {
    for (when_full, kept) in [
        (WhenFull::DropNewest, [0u64, 1, 2]),
        (WhenFull::DropOldest, [7, 8, 9]),
    ] {
        let c = counters();
        let q = Queue::new(3, when_full, c.clone());
        for n in 0..10 {
            q.push(alert(n, Severity::High));
        }
        assert_eq!(c.dropped.load(Ordering::Relaxed), 7, "{when_full:?}");
        assert_eq!(c.queued.load(Ordering::Relaxed), 3);
        let got: Vec<u64> = q.pop_batch(100).await.iter().map(|a| a.count).collect();
        assert_eq!(got, kept, "{when_full:?}");
        assert_eq!(c.queued.load(Ordering::Relaxed), 0);
        q.close();
        assert!(q.pop_batch(100).await.is_empty());
        assert_eq!(q.push(alert(11, Severity::High)), Pushed::Closed);
        assert_eq!(c.dropped.load(Ordering::Relaxed), 8);
    }
}

#[tokio::test]
async fn a_closed_queue_still_hands_out_what_it_holds() {
    let q = Queue::new(10, WhenFull::DropNewest, counters());
    for n in 0..5 {
        q.push(alert(n, Severity::Low));
    }
    q.close();
    assert_eq!(q.pop_batch(2).await.len(), 2);
    assert_eq!(q.pop_batch(10).await.len(), 3);
    assert!(q.pop_batch(10).await.is_empty());
}

fn file_config(path: &Path, max_bytes: u64, keep: u32) -> file::FileConfig {
    file::FileConfig {
        path: Some(path.to_path_buf()),
        format: file::Format::Json,
        max_bytes,
        keep,
    }
}

#[tokio::test]
async fn the_file_sink_writes_one_json_line_per_alert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/alerts.jsonl");
    let mut sink = file_config(&path, 0, 5).build(&ctx(dir.path())).unwrap();
    let batch: Vec<_> = (0..3).map(|n| alert(n, Severity::High)).collect();
    let out = sink.deliver(&batch).await;
    assert_eq!(
        out,
        Outcome {
            delivered: 3,
            failed: 0,
            retried: 0
        }
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["account"], "user2");
    assert_eq!(lines[0]["rule"], "failed_logins_account");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

#[tokio::test]
async fn the_file_sink_writes_ecs_documents_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.ecs.jsonl");
    let config = file::FileConfig {
        format: file::Format::Ecs,
        ..file_config(&path, 0, 5)
    };
    let mut sink = config.build(&ctx(dir.path())).unwrap();
    let batch: Vec<_> = (0..2).map(|n| alert(n, Severity::High)).collect();
    assert_eq!(sink.deliver(&batch).await.delivered, 2);
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1]["user"]["name"], "user1");
    assert_eq!(docs[0]["event"]["kind"], "alert");
    assert_eq!(docs[0]["event"]["action"], "failed_logins_account");
    assert_eq!(docs[0]["ecs"]["version"], super::ecs::ECS_VERSION);
    // Read from the config as an operator writes it.
    let tables = sinks_from(&format!(
        "[[sinks]]\nname = \"siem\"\ntype = \"file\"\nformat = \"ecs\"\npath = \"{}\"\n",
        path.display()
    ));
    assert!(problems_of_tables(&tables, dir.path()).is_empty());
}

fn problems_of_tables(tables: &[SinkTable], dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    super::validate(tables, &ctx(dir), &mut problems);
    problems
}

#[tokio::test]
async fn the_file_sink_rotates_by_size_and_keeps_what_it_was_told() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let one = serde_json::to_vec(&*alert(0, Severity::High))
        .unwrap()
        .len() as u64
        + 1;
    // Four lines fit in a file; 20 alerts make 5 files: the live one and 2 kept.
    let mut sink = file_config(&path, one * 4 + 1, 2)
        .build(&ctx(dir.path()))
        .unwrap();
    for n in 0..20 {
        let out = sink.deliver(&[alert(n % 10, Severity::High)]).await;
        assert_eq!(out.delivered, 1);
    }
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    assert_eq!(count(&path), 4);
    assert_eq!(count(&numbered(1)), 4);
    assert_eq!(count(&numbered(2)), 4);
    assert!(!numbered(3).exists());
}

#[test]
fn the_file_sink_refuses_what_is_not_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Opened without blocking: no reader on the FIFO is an error, never a hang.
    let err = file_config(&fifo, 0, 5)
        .build(&ctx(dir.path()))
        .err()
        .unwrap();
    assert!(
        err.raw_os_error() == Some(nix::libc::ENXIO)
            || err.to_string().contains("not a regular file"),
        "{err}"
    );
    let err = file_config(dir.path(), 0, 5)
        .build(&ctx(dir.path()))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("directory") || err.kind() == std::io::ErrorKind::IsADirectory,
        "{err}"
    );
}

/// Records what it is given.
struct Recorder(Arc<std::sync::Mutex<Vec<u64>>>);

impl Sink for Recorder {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            self.0.lock().unwrap().extend(batch.iter().map(|a| a.count));
            Outcome {
                delivered: batch.len() as u64,
                ..Outcome::default()
            }
        })
    }
}

#[tokio::test]
async fn each_sink_gets_the_alerts_at_or_above_its_min_severity_then_drains_on_stop() {
    let (tx, rx) = mpsc::channel(100);
    let mut sinks = Sinks::default();
    let mut seen = Vec::new();
    for (name, min) in [("all", Severity::Info), ("high", Severity::High)] {
        let got = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut table = SinkTable::new(name, "test");
        table.min_severity = min;
        sinks.add(
            Settings::of(&table, "test"),
            Box::new(Recorder(got.clone())),
        );
        seen.push(got);
    }
    let counters = sinks.counters();
    let running = sinks.start(rx);
    let severities = [
        Severity::Low,
        Severity::High,
        Severity::Critical,
        Severity::Medium,
    ];
    for (n, s) in severities.into_iter().enumerate() {
        tx.try_send(alert(n as u64, s)).unwrap();
    }
    // Stopping hands on what the engine had queued, and every sink delivers it.
    let busy = running.stop(Duration::from_secs(30)).await;
    assert!(busy.is_empty(), "{busy:?}");
    assert_eq!(*seen[0].lock().unwrap(), [0, 1, 2, 3]);
    assert_eq!(*seen[1].lock().unwrap(), [1, 2]);
    assert_eq!(counters[0].delivered.load(Ordering::Relaxed), 4);
    assert_eq!(counters[1].delivered.load(Ordering::Relaxed), 2);
    assert_eq!(counters[1].dropped.load(Ordering::Relaxed), 0);
}

#[test]
fn the_stats_show_every_sink_and_sum_their_failures() {
    let stats = crate::engine::stats::Stats::default();
    let a = Arc::new(SinkCounters::new("alerts", "file"));
    let b = Arc::new(SinkCounters::new("log", "log"));
    a.failed.store(2, Ordering::Relaxed);
    b.failed.store(1, Ordering::Relaxed);
    b.delivered.store(7, Ordering::Relaxed);
    stats.set_sinks(vec![a, b]);
    let snap = stats.snapshot();
    assert_eq!(snap.alert_write_errors, 3);
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(
        json["sinks"][1],
        serde_json::json!({"name": "log", "type": "log", "delivered": 7, "failed": 1,
            "retried": 0, "dropped": 0, "queued": 0, "grouped": 0, "suppressed": 0})
    );
    // `ctl status` shows a row per sink.
    let counters = crate::admin::views::CountersView::of(&snap);
    let table = crate::admin::ctl::render_counters(&counters, 80);
    let row: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.trim_matches('│')
                .split('┆')
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.len() == 9 && cells[0] == "log")
        .collect();
    assert_eq!(
        row,
        [["log", "log", "7", "1", "0", "0", "0", "0", "0"]],
        "{table}"
    );
}

/// Records each notification's group count (1 for an alert delivered alone) and rule.
struct GroupRecorder(Arc<std::sync::Mutex<Vec<(&'static str, u64)>>>);

impl Sink for GroupRecorder {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            self.0.lock().unwrap().extend(
                batch
                    .iter()
                    .map(|a| (a.rule, a.group.map_or(1, |g| g.count))),
            );
            Outcome {
                delivered: batch.len() as u64,
                ..Outcome::default()
            }
        })
    }
}

/// Waits (in paused time, which moves on by itself while every task waits) until
/// `got` holds `n` notifications.
async fn until_delivered(got: &std::sync::Mutex<Vec<(&'static str, u64)>>, n: usize) {
    for _ in 0..10_000 {
        if got.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} notifications never came: {:?}", got.lock().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_sink_groups_alerts_of_one_rule_and_account_and_the_file_sink_does_not() {
    let (tx, rx) = mpsc::channel(100);
    let mut sinks = Sinks::default();
    let webhook_like = Arc::new(std::sync::Mutex::new(Vec::new()));
    let file_like = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut table = SinkTable::new("people", "exec");
    table.group_secs = Some(60);
    sinks.add(
        Settings::of(&table, "exec"),
        Box::new(GroupRecorder(webhook_like.clone())),
    );
    sinks.add(
        Settings::of(&SinkTable::new("alerts", "file"), "file"),
        Box::new(GroupRecorder(file_like.clone())),
    );
    let counters = sinks.counters();
    let running = sinks.start(rx);
    let same = |n| {
        let mut a = (*alert(n, Severity::High)).clone();
        a.account = Some("alice".into());
        Arc::new(a)
    };
    tx.try_send(same(1)).unwrap();
    // The first goes at once.
    until_delivered(&webhook_like, 1).await;
    for n in 2..=5 {
        tx.try_send(same(n)).unwrap();
    }
    // The other four become one notification when the 60 s span ends.
    until_delivered(&webhook_like, 2).await;
    assert_eq!(
        *webhook_like.lock().unwrap(),
        [("failed_logins_account", 1), ("failed_logins_account", 5)]
    );
    assert_eq!(counters[0].grouped.load(Ordering::Relaxed), 4);
    assert_eq!(counters[0].delivered.load(Ordering::Relaxed), 2);
    // The file sink keeps every alert.
    until_delivered(&file_like, 5).await;
    assert!(file_like.lock().unwrap().iter().all(|(_, n)| *n == 1));
    assert!(running.stop(Duration::from_secs(5)).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_sink_sums_up_what_it_held_back_when_the_limit_lets_up() {
    let (tx, rx) = mpsc::channel(100);
    let mut sinks = Sinks::default();
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut table = SinkTable::new("pager", "exec");
    table.group_secs = Some(0);
    table.rate_limit = 2;
    table.rate_limit_secs = 60;
    sinks.add(
        Settings::of(&table, "exec"),
        Box::new(GroupRecorder(got.clone())),
    );
    let counters = sinks.counters();
    let running = sinks.start(rx);
    for n in 0..6 {
        tx.try_send(alert(n, Severity::High)).unwrap();
    }
    until_delivered(&got, 3).await;
    let seen = got.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2], (group::RATE_LIMIT_RULE, 4));
    assert_eq!(counters[0].suppressed.load(Ordering::Relaxed), 4);
    assert!(running.stop(Duration::from_secs(5)).await.is_empty());
}

#[test]
fn noise_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let tables = sinks_from(
        r#"
[[sinks]]
name = "a"
type = "log"
group_secs = 100000
rate_limit_secs = 0
"#,
    );
    let mut problems = Vec::new();
    validate(&tables, &ctx(dir.path()), &mut problems);
    let all = problems.join("\n");
    assert!(
        all.contains("sinks[0] (a): group_secs must be at most 86400"),
        "{all}"
    );
    assert!(
        all.contains("sinks[0] (a): rate_limit_secs must be between 1 and 86400"),
        "{all}"
    );
}
