//! The Dovecot policy endpoint over HTTP/1.1 keep-alive, side by side with empty
//! handlers measured in the same run: the floor of any handler on each HTTP stack.
//!
//! Run: `cargo bench -p access-oracle --bench policy` (about 2 min; prints markdown
//! tables). Results and their reading are in `docs/PERFORMANCE.md`.
//!
//! * Servers, in this process, on one tokio multi-thread runtime as `access-oracle serve`
//!   builds it (a worker per CPU):
//!   - the axum floor: an axum router whose handler returns the same fixed JSON
//!     (`{"status":0,"msg":""}`) without looking at the request, on hyper HTTP/1.1
//!     connections (keep-alive, header read timeout: how the endpoint was served before
//!     its own HTTP loop, and what a user of the usual stack would write);
//!   - the same, after reading the body into `Bytes` as an endpoint must;
//!   - the endpoint's own HTTP loop (`server::policy::http::serve`) with a handler that
//!     returns the same fixed JSON: the floor of that loop;
//!   - the policy endpoint: `server::policy::serve`, the same loop with the API key
//!     check, the JSON reader and the engine on the default rules, warmed with
//!     [`ACCOUNTS`] accounts that have logged in (`POLICY_BENCH_ACCOUNTS=N` for another
//!     number).
//! * Clients, in a separate process (this binary run again with a `client-*`
//!   argument), as Dovecot's auth process is separate: raw HTTP/1.1 over keep-alive TCP
//!   connections, one request in flight per connection as Dovecot's HTTP client sends
//!   them, requests prepared beforehand so the client spends little CPU.
//! * Requests: what Dovecot sends for a successful login, in turn: `allow`, `allow`,
//!   `report` with `success: true` (~300 bytes each with headers), users varying over all
//!   accounts; every reply must be `200` with `{"status":0,"msg":""}` (checked).
//! * Latency: one connection, one request at a time; p50 / p99 of the round trip.
//! * Throughput: [`CONNECTIONS`] connections driven by one event-loop thread, requests
//!   per second over a fixed time, with the latency of each request under that load.
//!   Twice: as `access-oracle serve` runs (a worker per CPU, threads placed by the
//!   scheduler, the client among them), then pinned: the servers on one worker with all
//!   their threads on CPU 0, the client on CPU 1, so each side has a core of its own
//!   and the servers' throughput on one core is measured apart from where the
//!   scheduler puts three busy threads on two CPUs.
//!
//! The endpoint's engine keeps the audit trail, as `access-oracle serve` does by
//! default (each `report` is a record its thread writes and fdatasyncs);
//! `POLICY_BENCH_AUDIT=0` measures without it.
//!
//! `POLICY_BENCH_WORKERS=N` sets the servers' worker threads of the first run (default:
//! one per CPU, as `access-oracle serve`); `POLICY_BENCH_CONNECTIONS=N` the connections;
//! `POLICY_BENCH_ONLY=K` measures only the server of column `K` (0-3), e.g. to profile
//! it alone.
//!
//! The servers are measured in rotating order over several rounds so that the
//! drift of a shared VM hits all of them. Without `--bench` (e.g. `cargo test --benches`)
//! it runs a few hundred requests only, as a smoke test.

mod common;

use common::{percentile_us, process_cpu, run_client};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use access_oracle::config::{Config, RawConfig};
use access_oracle::engine::Engine;
use access_oracle::engine::policy::{PolicyAttempt, PolicySettings};
use access_oracle::protocol::Outcome;
use access_oracle::server::policy::api_key::ApiKey;
use access_oracle::server::policy::http::{self, Reply};
use access_oracle::server::policy::{self, HEADER_READ_TIMEOUT, Shared};
use anyhow::{Context, bail, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::header;
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tower_service::Service;

/// Accounts the engine knows before measuring (`POLICY_BENCH_ACCOUNTS` overrides it),
/// and over which the requests' users vary.
const ACCOUNTS: usize = 100_000;

fn accounts() -> usize {
    std::env::var("POLICY_BENCH_ACCOUNTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n >= PREPARED)
        .unwrap_or(ACCOUNTS)
}

/// Concurrent connections of the throughput test (Dovecot opens up to 100);
/// `POLICY_BENCH_CONNECTIONS=N` for another number.
const CONNECTIONS: usize = 64;

fn connections() -> usize {
    std::env::var("POLICY_BENCH_CONNECTIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CONNECTIONS)
}

/// The pinned run's CPUs: the servers', the client's.
const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;

/// Distinct prepared requests (users spread over all accounts; at least this many
/// accounts).
const PREPARED: usize = 10_000;

/// The API key of both servers' clients.
const KEY: &str = "bench-key-0123456789abcdef";

/// The answer both servers give.
const CONTINUE: &[u8] = br#"{"status":0,"msg":""}"#;

/// How much to measure.
struct Plan {
    latency_requests: usize,
    latency_warmup: usize,
    rounds: usize,
    throughput_warmup: Duration,
    throughput_measure: Duration,
}

const FULL: Plan = Plan {
    latency_requests: 20_000,
    latency_warmup: 1_000,
    rounds: 3,
    throughput_warmup: Duration::from_millis(500),
    throughput_measure: Duration::from_secs(3),
};

const SMOKE: Plan = Plan {
    latency_requests: 200,
    latency_warmup: 20,
    rounds: 1,
    throughput_warmup: Duration::from_millis(50),
    throughput_measure: Duration::from_millis(200),
};

/// The servers, in the order of their tables' columns.
const KINDS: [&str; 4] = [
    "axum floor",
    "axum floor reading the body",
    "own HTTP loop floor",
    "policy endpoint",
];

/// The columns of [`KINDS`] the policy endpoint is compared with.
const AXUM_FLOOR: usize = 0;
const OWN_FLOOR: usize = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("client-latency") => client_latency(&args[1..]),
        Some("client-throughput") => client_throughput(&args[1..]),
        _ => orchestrate(if args.iter().any(|a| a == "--bench") {
            &FULL
        } else {
            &SMOKE
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("policy bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------

struct Servers {
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    addrs: Vec<SocketAddr>,
    stop: watch::Sender<bool>,
    /// The audit trail's writer and directory, when it is on.
    _audit: Option<(access_oracle::audit::AuditWriter, tempfile::TempDir)>,
}

impl Servers {
    /// Starts the servers; with `pin`, on one worker thread, and every thread of theirs
    /// (workers, blocking pool, the audit trail's writer) on CPU 0 only.
    fn start(pin: bool) -> anyhow::Result<Servers> {
        // Threads inherit the CPUs of the thread that creates them: this one, until
        // `start` returns.
        if pin {
            common::pin_this_thread(Some(SERVER_CPU))?;
        }
        let servers = Servers::build(pin);
        if pin {
            common::pin_this_thread(None)?;
        }
        servers
    }

    fn build(pin: bool) -> anyhow::Result<Servers> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if pin {
            builder.worker_threads(1);
        } else if let Some(n) = std::env::var("POLICY_BENCH_WORKERS")
            .ok()
            .and_then(|n| n.parse().ok())
        {
            builder.worker_threads(n);
        }
        let runtime = builder.build().context("tokio runtime")?;
        let config = Config::from_raw(RawConfig::default()).map_err(|p| anyhow::anyhow!("{p}"))?;
        let (engine, alerts) = Engine::new(&config, Timestamp::now());
        drop(alerts);
        let engine = Arc::new(engine);
        let now = Timestamp::now();
        for i in 0..accounts() {
            engine.policy_report(
                &PolicyAttempt {
                    user: &user(i),
                    ip: Some(ip(i).into()),
                    protocol: "imap",
                    pwhash: None,
                    session: None,
                    result: Outcome::Ok,
                    mech: Some("PLAIN"),
                    port: Some(40000),
                    tls: Some(true),
                    client: None,
                },
                now,
            );
        }
        // The audit trail, on by default as in `access-oracle serve` (after the warm-up,
        // which is not recorded): every report is a record, written and fdatasynced by
        // its thread on the same two CPUs. `POLICY_BENCH_AUDIT=0` measures without it.
        let audit = if std::env::var("POLICY_BENCH_AUDIT").as_deref() == Ok("0") {
            None
        } else {
            let dir = tempfile::tempdir().context("a directory for the audit trail")?;
            let writer = engine
                .open_audit(
                    &access_oracle::audit::AuditConfig::default(),
                    dir.path(),
                    false,
                )?
                .context("the audit trail is on by default")?;
            Some((writer, dir))
        };
        let key = ApiKey::new("X-API-Key", KEY).map_err(anyhow::Error::msg)?;
        let shared = Arc::new(Shared::new(engine.clone(), key, PolicySettings::default()));
        let (stop, stopped) = watch::channel(false);
        let addrs = runtime.block_on(async {
            let floor = Router::new().route(
                "/policy",
                post(|| async { ([(header::CONTENT_TYPE, "application/json")], CONTINUE) }),
            );
            // The same, but the body is read first, as the endpoint must.
            let floor_body = Router::new().route(
                "/policy",
                post(|body: axum::body::Bytes| async move {
                    std::hint::black_box(body);
                    ([(header::CONTENT_TYPE, "application/json")], CONTINUE)
                }),
            );
            let mut addrs = Vec::new();
            for router in [floor, floor_body] {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addrs.push(listener.local_addr()?);
                tokio::spawn(serve_axum(listener, router));
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            let route = "/policy".into();
            tokio::spawn(http::serve(
                listener,
                route,
                Arc::new(Fixed),
                1024,
                stopped.clone(),
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            let route = "/policy".into();
            tokio::spawn(policy::serve(
                listener,
                route,
                shared,
                1024,
                stopped.clone(),
            ));
            anyhow::Ok(addrs)
        })?;
        Ok(Servers {
            runtime,
            engine,
            addrs,
            stop,
            _audit: audit,
        })
    }

    /// Answers other than "continue" so far (must stay 0).
    fn not_continued(&self) -> u64 {
        let c = self.engine.stats.policy.snapshot();
        let get = |name: &str| c.iter().find(|(n, _)| *n == name).map_or(0, |p| p.1);
        get("allow") - get("continued") + get("unauthorized") + get("malformed")
    }

    fn requests(&self) -> u64 {
        let c = self.engine.stats.policy.snapshot();
        let get = |name: &str| c.iter().find(|(n, _)| *n == name).map_or(0, |p| p.1);
        get("allow") + get("report_ok")
    }

    fn stop(self) {
        let _ = self.stop.send(true);
        self.runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The floor of the endpoint's HTTP loop: the fixed answer, the request unread.
struct Fixed;

impl http::Handler for Fixed {
    fn handle(&self, _request: &http::Request<'_>, _peer: SocketAddr) -> Reply {
        Reply::json(CONTINUE)
    }
}

/// Serves `app` as the endpoint was served before its own HTTP loop: each connection
/// by hyper's HTTP/1.1 connection (keep-alive, header read timeout, TCP_NODELAY) with
/// axum's router as the service. Runs until the runtime stops.
async fn serve_axum(listener: tokio::net::TcpListener, app: Router) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: axum::extract::Request<Incoming>| {
                    let mut app = app.clone();
                    async move { app.call(req.map(Body::new)).await }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn user(i: usize) -> String {
    format!("u{i:06}@example.org")
}

fn ip(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0x0a00_0000 + i as u32)
}

// ---------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------

#[derive(Default)]
struct Results {
    latency: Vec<u32>,
    latency_cpu: Duration,
    latency_requests: u64,
    rounds: Vec<f64>,
    loaded_p50: Vec<f64>,
    loaded_p99: Vec<f64>,
    server_cpu: Duration,
    client_cpu: Duration,
    requests: u64,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Which servers to measure: all, or the one `POLICY_BENCH_ONLY` names by its column
/// (0-3), e.g. to profile one alone.
fn measured(kind: usize) -> bool {
    std::env::var("POLICY_BENCH_ONLY")
        .ok()
        .and_then(|k| k.parse::<usize>().ok())
        .is_none_or(|only| only == kind)
}

fn orchestrate(plan: &Plan) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("this program's path")?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "policy bench: {cpus} CPUs, load average {}, {} accounts",
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        accounts()
    );
    let started = Instant::now();
    // 1. As `serve` runs: a worker per CPU, the scheduler free to put the servers'
    //    threads and the client anywhere. Latency, then throughput.
    let (free, handled, audit) = measure(&exe, plan, false)?;
    print_report(plan, &free, handled);
    // 2. Pinned: the servers on one worker, all their threads on CPU 0; the client on
    //    CPU 1. Each side has a core of its own: the servers' throughput on one core.
    let pinned = if cpus >= 2 {
        let (pinned, handled, _) = measure(&exe, plan, true)?;
        print_pinned(plan, &pinned, handled);
        true
    } else {
        println!("\nOne CPU only: no pinned run.");
        false
    };
    match audit {
        Some(status) => println!("\nAudit trail on (as `serve` runs by default): {status}"),
        None => println!("\nAudit trail off (POLICY_BENCH_AUDIT=0)."),
    }
    println!(
        "Run time {:.0} s{}.",
        started.elapsed().as_secs_f64(),
        if pinned { "" } else { " (no pinned run)" }
    );
    Ok(())
}

/// Measures every server: latency (not when pinned), then throughput, in rounds of
/// rotating order. Returns the results, the requests the engine handled and the audit
/// trail's status.
fn measure(
    exe: &std::path::Path,
    plan: &Plan,
    pin: bool,
) -> anyhow::Result<(Vec<Results>, u64, Option<String>)> {
    let servers = Servers::start(pin)?;
    let client_cpu = if pin {
        CLIENT_CPU.to_string()
    } else {
        "-".into()
    };
    let mut results: Vec<Results> = KINDS.iter().map(|_| Results::default()).collect();
    for round in 0..plan.rounds {
        // Rotate which server goes first, round by round.
        let order: Vec<usize> = (0..KINDS.len())
            .map(|k| (k + round) % KINDS.len())
            .filter(|&k| measured(k))
            .collect();
        for &kind in order.iter().filter(|_| !pin) {
            let addr = servers.addrs[kind].to_string();
            let r = &mut results[kind];
            let cpu0 = process_cpu();
            let out = run_client(
                exe,
                &[
                    "client-latency",
                    &addr,
                    &plan.latency_requests.to_string(),
                    &plan.latency_warmup.to_string(),
                    &(round * 7919).to_string(),
                ],
            )?;
            r.latency_cpu += process_cpu() - cpu0;
            r.latency_requests += (plan.latency_requests + plan.latency_warmup) as u64;
            r.latency.extend(
                out.chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
            );
        }
        for &kind in &order {
            let addr = servers.addrs[kind].to_string();
            let cpu0 = process_cpu();
            let out = run_client(
                exe,
                &[
                    "client-throughput",
                    &addr,
                    &connections().to_string(),
                    &plan.throughput_warmup.as_millis().to_string(),
                    &plan.throughput_measure.as_millis().to_string(),
                    &(round * 104_729).to_string(),
                    &client_cpu,
                ],
            )?;
            let server_cpu = process_cpu() - cpu0;
            let text = String::from_utf8(out)?;
            let f: Vec<f64> = text
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("client output {text:?}"))?;
            let [counted, secs, total, client_cpu, p50, p99] = f[..] else {
                bail!("client output {text:?}");
            };
            let r = &mut results[kind];
            r.rounds.push(counted / secs);
            r.loaded_p50.push(p50);
            r.loaded_p99.push(p99);
            r.server_cpu += server_cpu;
            r.client_cpu += Duration::from_secs_f64(client_cpu);
            r.requests += total as u64;
        }
    }
    let refused = servers.not_continued();
    let handled = servers.requests();
    ensure!(
        refused == 0,
        "the endpoint answered {refused} requests other than continue"
    );
    let audit = servers.engine.audit().map(|a| {
        a.flush();
        a.status().to_string()
    });
    servers.stop();
    for r in &mut results {
        r.latency.sort_unstable();
    }
    Ok((results, handled, audit))
}

/// One row of a table: the servers' values and the endpoint's ratios to the floors.
fn row(name: &str, values: &[f64], digits: usize, target: Option<&str>) {
    let cells: Vec<String> = values
        .iter()
        .map(|v| {
            if v.is_nan() {
                "-".to_string()
            } else {
                format!("{v:.digits$}")
            }
        })
        .collect();
    let policy = values[values.len() - 1];
    let (axum, own) = (policy / values[AXUM_FLOOR], policy / values[OWN_FLOOR]);
    let target = target.map_or(String::new(), |t| format!(" {t} |"));
    println!(
        "| {name} | {} | {axum:.2}x | {own:.2}x |{target}",
        cells.join(" | ")
    );
}

fn header(extra: &str) {
    println!(
        "| measure | {} | policy / axum floor | policy / own floor |{extra}",
        KINDS.join(" | ")
    );
    println!(
        "|---|{}{}",
        "---:|".repeat(KINDS.len() + 2),
        if extra.is_empty() { "" } else { "---|" }
    );
}

fn print_report(plan: &Plan, results: &[Results], handled: u64) {
    println!();
    println!(
        "Latency: one keep-alive connection, one request at a time, {} timed per server ({} rounds, rotating order), client in its own process.",
        plan.latency_requests * plan.rounds,
        plan.rounds
    );
    println!();
    header("");
    for (name, q) in [("p50 (µs)", 0.5), ("p99 (µs)", 0.99), ("p99.9 (µs)", 0.999)] {
        let values: Vec<f64> = results
            .iter()
            .map(|r| {
                if r.latency.is_empty() {
                    f64::NAN
                } else {
                    percentile_us(&r.latency, q)
                }
            })
            .collect();
        row(name, &values, 1, None);
    }
    let values: Vec<f64> = results
        .iter()
        .map(|r| r.latency_cpu.as_secs_f64() * 1e6 / r.latency_requests as f64)
        .collect();
    row("server CPU per request (µs)", &values, 1, None);
    print_throughput(
        plan,
        results,
        handled,
        &format!(
            "Throughput: {} keep-alive connections, one request in flight each, one client event-loop thread in its own process; a worker per CPU, threads placed by the scheduler (as `serve`)",
            connections()
        ),
    );
}

fn print_pinned(plan: &Plan, results: &[Results], handled: u64) {
    print_throughput(
        plan,
        results,
        handled,
        &format!(
            "Throughput, pinned: the servers on one worker thread, all their threads (the audit trail's writer too) on CPU {SERVER_CPU}; the client on CPU {CLIENT_CPU}; {} connections",
            connections()
        ),
    );
}

/// A throughput table under `title`.
fn print_throughput(plan: &Plan, results: &[Results], handled: u64, title: &str) {
    println!();
    println!(
        "{title}; median of {} rounds of {:.1} s.",
        plan.rounds,
        plan.throughput_measure.as_secs_f64()
    );
    println!();
    throughput_table(results);
    println!();
    println!(
        "Every answer was 200 `{{\"status\":0,\"msg\":\"\"}}` ({handled} requests through the engine)."
    );
}

fn throughput_table(results: &[Results]) {
    header(" target |");
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n as f64;
    let rows: [(&str, Vec<f64>, usize, &str); 5] = [
        (
            "requests/s",
            results.iter().map(|r| median(&r.rounds)).collect(),
            0,
            "≥ 50,000/s",
        ),
        (
            "p50 under load (µs)",
            results.iter().map(|r| median(&r.loaded_p50)).collect(),
            0,
            "",
        ),
        (
            "p99 under load (µs)",
            results.iter().map(|r| median(&r.loaded_p99)).collect(),
            0,
            "",
        ),
        (
            "server CPU per request (µs)",
            results
                .iter()
                .map(|r| per(r.server_cpu, r.requests))
                .collect(),
            2,
            "",
        ),
        (
            "client CPU per request (µs)",
            results
                .iter()
                .map(|r| per(r.client_cpu, r.requests))
                .collect(),
            2,
            "",
        ),
    ];
    for (name, values, digits, target) in rows {
        row(name, &values, digits, Some(target));
    }
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| rounds (requests/s) | {} | | | |",
        results
            .iter()
            .map(|r| list(&r.rounds))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

// ---------------------------------------------------------------------------------
// Clients (run in their own process)
// ---------------------------------------------------------------------------------

/// The request bodies Dovecot sends for user `i`: allow, allow, report(success).
fn prepared_requests() -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(PREPARED * 3);
    let stride = accounts() / PREPARED;
    for n in 0..PREPARED {
        let i = n * stride + n % stride;
        let fields = format!(
            r#""device_id":"","local":"192.0.2.1","login":"{}","mech":"PLAIN","protocol":"imap","pwhash":"{:04x}","remote":"{}","rport":"{}","session_id":"S{i:015}""#,
            user(i),
            i % 4096,
            ip(i),
            40000 + i % 20000
        );
        for (command, body) in [
            ("allow", format!("{{{fields},\"tls\":false}}")),
            ("allow", format!("{{{fields},\"tls\":false}}")),
            (
                "report",
                format!("{{{fields},\"success\":true,\"policy_reject\":false,\"tls\":false}}"),
            ),
        ] {
            out.push(
                format!(
                    "POST /policy?command={command} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: dovecot/auth-policy-client\r\nContent-Type: application/json\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            );
        }
    }
    out
}

/// Whether `buf` holds a whole response; `Some(Ok(len))` when it does and it is the
/// expected one, `Some(Err)` for any other complete response. Cheap (it runs on the
/// same two CPUs as the server): one search for the head's end, one pass over its lines.
fn complete_response(buf: &[u8]) -> Option<Result<usize, String>> {
    let head_end = memchr::memmem::find(buf, b"\r\n\r\n")? + 4;
    let head = &buf[..head_end];
    let length = head
        .split(|&b| b == b'\n')
        .find_map(|line| {
            let (name, value) = line.split_at_checked(15)?;
            name.eq_ignore_ascii_case(b"content-length:").then(|| {
                value.trim_ascii().iter().try_fold(0usize, |n, &d| {
                    d.is_ascii_digit().then(|| n * 10 + usize::from(d - b'0'))
                })
            })?
        })
        .unwrap_or(0);
    if buf.len() < head_end + length {
        return None;
    }
    let body = &buf[head_end..head_end + length];
    if head.starts_with(b"HTTP/1.1 200 ") && body == CONTINUE {
        Some(Ok(head_end + length))
    } else {
        Some(Err(format!(
            "unexpected response {:?}",
            String::from_utf8_lossy(&buf[..head_end + length])
        )))
    }
}

/// `client-latency ADDR COUNT WARMUP FIRST`: sequential round trips on one blocking
/// keep-alive connection; writes each timed round trip (ns, u32 LE) to stdout.
fn client_latency(args: &[String]) -> anyhow::Result<()> {
    let [addr, count, warmup, first] = args else {
        bail!("usage: client-latency ADDR COUNT WARMUP FIRST");
    };
    let (count, warmup, first): (usize, usize, usize) =
        (count.parse()?, warmup.parse()?, first.parse()?);
    let requests = prepared_requests();
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut samples = Vec::with_capacity(count * 4);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    for n in 0..warmup + count {
        let request = &requests[(first + n) % requests.len()];
        buf.clear();
        let t = Instant::now();
        stream.write_all(request)?;
        loop {
            match complete_response(&buf) {
                Some(Ok(_)) => break,
                Some(Err(e)) => bail!("{e}"),
                None => {}
            }
            let got = stream.read(&mut chunk)?;
            ensure!(got > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..got]);
        }
        let took = t.elapsed();
        if n >= warmup {
            let ns = u32::try_from(took.as_nanos()).unwrap_or(u32::MAX);
            samples.extend_from_slice(&ns.to_le_bytes());
        }
    }
    std::io::stdout().write_all(&samples)?;
    Ok(())
}

/// CPU time of this process so far.
fn own_cpu() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    usage.map_or(Duration::ZERO, |u| {
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
        };
        t(u.user_time()) + t(u.system_time())
    })
}

/// `client-throughput ADDR CONNECTIONS WARMUP_MS MEASURE_MS FIRST CPU|-`: every
/// connection keeps one request in flight, on CPU `CPU` only if one is given; prints `counted seconds total client_cpu_s p50_us p99_us`.
fn client_throughput(args: &[String]) -> anyhow::Result<()> {
    let [addr, conns, warmup_ms, measure_ms, first, cpu] = args else {
        bail!("usage: client-throughput ADDR CONNECTIONS WARMUP_MS MEASURE_MS FIRST CPU|-");
    };
    if let Ok(cpu) = cpu.parse::<usize>() {
        common::pin_this_thread(Some(cpu))?;
    }
    let addr: SocketAddr = addr.parse()?;
    let (conns, warmup, measure, first): (usize, u64, u64, usize) = (
        conns.parse()?,
        warmup_ms.parse()?,
        measure_ms.parse()?,
        first.parse()?,
    );
    let requests = Arc::new(prepared_requests());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cpu0 = own_cpu();
    let (counted, secs, total, mut samples) = runtime.block_on(async move {
        let start = Instant::now();
        let measure_from = start + Duration::from_millis(warmup);
        let measure_until = measure_from + Duration::from_millis(measure);
        let mut tasks = Vec::with_capacity(conns);
        for c in 0..conns {
            let requests = requests.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                let (mut counted, mut total) = (0u64, 0u64);
                let mut samples: Vec<u32> = Vec::new();
                let mut n = first + c * 1009;
                loop {
                    let t = Instant::now();
                    if t >= measure_until {
                        break;
                    }
                    buf.clear();
                    stream.write_all(&requests[n % requests.len()]).await?;
                    loop {
                        match complete_response(&buf) {
                            Some(Ok(_)) => break,
                            Some(Err(e)) => anyhow::bail!("{e}"),
                            None => {}
                        }
                        let got = stream.read(&mut chunk).await?;
                        anyhow::ensure!(got > 0, "the server closed the connection");
                        buf.extend_from_slice(&chunk[..got]);
                    }
                    let done = Instant::now();
                    total += 1;
                    n += 1;
                    if t >= measure_from && done <= measure_until {
                        counted += 1;
                        samples.push(u32::try_from((done - t).as_nanos()).unwrap_or(u32::MAX));
                    }
                }
                anyhow::Ok((counted, total, samples))
            }));
        }
        let (mut counted, mut total, mut samples) = (0u64, 0u64, Vec::new());
        for t in tasks {
            let (c, n, s) = t.await??;
            counted += c;
            total += n;
            samples.extend(s);
        }
        anyhow::Ok((counted, measure as f64 / 1000.0, total, samples))
    })?;
    let cpu = own_cpu() - cpu0;
    samples.sort_unstable();
    ensure!(
        !samples.is_empty(),
        "no request completed in the measured time"
    );
    println!(
        "{counted} {secs} {total} {} {:.1} {:.1}",
        cpu.as_secs_f64(),
        percentile_us(&samples, 0.5),
        percentile_us(&samples, 0.99)
    );
    Ok(())
}
