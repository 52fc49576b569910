//! The oracle over its Unix socket, side by side with a bare Unix-socket echo server
//! measured in the same run: the floor no line server can beat on this machine.
//!
//! Run: `cargo bench -p access-oracle --bench socket` (about 40 s; prints a markdown
//! table). Results and their reading are in `docs/PERFORMANCE.md`.
//!
//! * Servers, in this process: the oracle (`server::start` on the default rules, in a
//!   temporary directory, warmed with [`ACCOUNTS`] logged-in accounts) and an echo
//!   server in the same tokio style (multi-thread runtime as `access-oracle serve`
//!   builds it, one task per connection, read a line, write it back).
//! * Clients, in a separate process (this binary run again with a `client-*` argument),
//!   as the design's floor figures were measured: Exim's processes are never inside the
//!   oracle's process either, and a client in the same process would share its runtime
//!   or its CPU accounting.
//! * Latency: one persistent connection, one ~60-byte `rcpt` request at a time (what
//!   the Exim library does), blocking std socket; p50 / p99 / p99.9 of the round trip.
//!   Twice: with the scheduler free (production), and with client and server pinned to
//!   one CPU (no cross-CPU wake-up, which costs tens of microseconds on a VM).
//! * Throughput: [`CONNECTIONS`] connections, each with one request in flight, driven
//!   by one event-loop thread (an efficient client leaves the most CPU to the server,
//!   which is the harder test); verdicts per second over a fixed time.
//!
//! Servers are measured in alternating order over several rounds so that drift of a
//! shared VM hits both. Users vary over all accounts, so every verdict stays `accept`
//! under the default recipient ceiling; the clients check every reply.
//!
//! `JOURNAL=off` runs the oracle without its state journal (`[server] journal = false`),
//! to compare.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs a few hundred requests only,
//! as a smoke test.

mod common;

use common::{process_cpu, run_client};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use access_oracle::config::{Config, Overrides, RawConfig};
use access_oracle::engine::Engine;
use access_oracle::protocol::parse_line;
use access_oracle::server::{self, ConfigSource, Running};
use anyhow::{Context, bail, ensure};
use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Accounts the oracle knows before measuring.
const ACCOUNTS: usize = 100_000;

/// Concurrent connections of the throughput test.
const CONNECTIONS: usize = 64;

/// How much to measure.
struct Plan {
    /// Timed requests per server per round (latency).
    latency_requests: usize,
    /// Untimed requests first (latency).
    latency_warmup: usize,
    /// Rounds of (oracle, echo) for latency.
    latency_rounds: usize,
    /// Untimed time before counting (throughput).
    throughput_warmup: Duration,
    /// Counted time (throughput).
    throughput_measure: Duration,
    /// Rounds of (oracle, echo) for throughput.
    throughput_rounds: usize,
}

const FULL: Plan = Plan {
    latency_requests: 40_000,
    latency_warmup: 2_000,
    latency_rounds: 3,
    throughput_warmup: Duration::from_millis(300),
    throughput_measure: Duration::from_secs(2),
    throughput_rounds: 5,
};

const SMOKE: Plan = Plan {
    latency_requests: 200,
    latency_warmup: 20,
    latency_rounds: 1,
    throughput_warmup: Duration::from_millis(50),
    throughput_measure: Duration::from_millis(200),
    throughput_rounds: 1,
};

/// Which server a client talks to; decides what a correct reply is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Oracle,
    Echo,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Oracle => "oracle",
            Kind::Echo => "echo",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Kind> {
        match s {
            "oracle" => Ok(Kind::Oracle),
            "echo" => Ok(Kind::Echo),
            _ => bail!("unknown server kind {s:?}"),
        }
    }

    /// Whether `reply` is the right answer to `request`.
    fn reply_ok(self, request: &[u8], reply: &[u8]) -> bool {
        match self {
            Kind::Oracle => reply == b"accept\n",
            Kind::Echo => reply == request,
        }
    }
}

/// The request for account `i`: ~60 bytes (the library's own RCPT request, with the sender
/// and the connection facts, is ~110).
fn request_line(out: &mut Vec<u8>, i: usize) {
    let i = i % ACCOUNTS;
    let ip = ip(i);
    out.clear();
    writeln!(out, "rcpt user=u{i:06} ip={ip} rcpt=rcpt{i}@example.org").expect("write to a Vec");
}

fn ip(i: usize) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(0x0a00_0000 + i as u32)
}

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
            eprintln!("socket bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------

/// The two servers, on one runtime.
struct Servers {
    runtime: tokio::runtime::Runtime,
    oracle: Running,
    engine: Arc<Engine>,
    echo: tokio::task::JoinHandle<()>,
    oracle_socket: PathBuf,
    echo_socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Servers {
    /// Starts both servers; with `pin`, every runtime thread runs on that CPU only.
    fn start(pin: Option<usize>) -> anyhow::Result<Servers> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all();
        if let Some(cpu) = pin {
            builder.on_thread_start(move || {
                if let Err(e) = common::pin_this_thread(Some(cpu)) {
                    eprintln!("socket bench: cannot pin a runtime thread: {e}");
                }
            });
        }
        let runtime = builder.build().context("tokio runtime")?;
        let overrides = Overrides {
            exim_socket: Some(dir.path().join("exim.sock")),
            admin_socket: Some(dir.path().join("admin.sock")),
            state_dir: Some(dir.path().join("state")),
        };
        let mut raw = RawConfig::default();
        overrides.apply(&mut raw);
        // JOURNAL=off: the oracle without its state journal (the journal's cost).
        raw.server.journal = std::env::var("JOURNAL").map_or(true, |v| v != "off");
        let config = Config::from_raw(raw).map_err(|p| anyhow::anyhow!("{p}"))?;
        let oracle_socket = config.exim_socket.path.clone();
        let echo_socket = dir.path().join("echo.sock");
        let (oracle, echo) = runtime.block_on(async {
            let oracle = server::start(
                config,
                ConfigSource {
                    path: None,
                    overrides,
                },
            )
            .await?;
            let listener = UnixListener::bind(&echo_socket).context("bind the echo socket")?;
            let echo = tokio::spawn(echo_server(listener));
            anyhow::Ok((oracle, echo))
        })?;
        let engine = oracle.engine.clone();
        // The warm state: every account has logged in from its own address.
        let now = Timestamp::now();
        for i in 0..ACCOUNTS {
            let line = format!("auth user=u{i:06} ip={} result=ok mech=PLAIN", ip(i));
            engine.handle(&parse_line(line.as_bytes())?, now);
        }
        Ok(Servers {
            runtime,
            oracle,
            engine,
            echo,
            oracle_socket,
            echo_socket,
            _dir: dir,
        })
    }

    fn socket(&self, kind: Kind) -> &Path {
        match kind {
            Kind::Oracle => &self.oracle_socket,
            Kind::Echo => &self.echo_socket,
        }
    }

    /// Replies other than `accept` so far (must stay 0).
    fn oracle_refusals(&self) -> u64 {
        self.engine
            .stats
            .snapshot()
            .replies
            .iter()
            .filter(|(kind, _)| *kind != "accept")
            .map(|(_, n)| n)
            .sum()
    }

    fn stop(self) -> anyhow::Result<()> {
        self.echo.abort();
        self.runtime.block_on(self.oracle.stop())?;
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        Ok(())
    }
}

/// The floor: a line echo in the oracle's style, one task per connection.
async fn echo_server(listener: UnixListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut rd = BufReader::new(rd);
            let mut line = Vec::with_capacity(512);
            loop {
                line.clear();
                match rd.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if wr.write_all(&line).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

// ---------------------------------------------------------------------------------
// Orchestration
// ---------------------------------------------------------------------------------

/// Latency samples of one server, in nanoseconds, with the server CPU they cost.
#[derive(Default)]
struct Latency {
    samples: Vec<u32>,
    server_cpu: Duration,
    requests: u64,
}

impl Latency {
    fn percentile_us(&self, q: f64) -> f64 {
        common::percentile_us(&self.samples, q)
    }

    fn mean_us(&self) -> f64 {
        self.samples.iter().map(|&s| f64::from(s)).sum::<f64>() / self.samples.len() as f64 / 1000.0
    }

    fn cpu_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests as f64
    }
}

/// Throughput of one server, summed over rounds.
#[derive(Default)]
struct Throughput {
    rounds: Vec<f64>,
    server_cpu: Duration,
    client_cpu: Duration,
    requests: u64,
}

impl Throughput {
    /// The median of the rounds' rates.
    fn rate(&self) -> f64 {
        let mut r = self.rounds.clone();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    }
}

fn orchestrate(plan: &Plan) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("this program's path")?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "socket bench: {cpus} CPUs, load average {}, {ACCOUNTS} accounts",
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = Instant::now();

    // 1. Latency, scheduler free, then pinned to CPU 0.
    let mut latency = Vec::new();
    for pin in [None, Some(0)] {
        let servers = Servers::start(pin)?;
        let mut by_kind = [Latency::default(), Latency::default()];
        let mut first_user = 0;
        for round in 0..plan.latency_rounds {
            for kind in order(round) {
                let cpu0 = process_cpu();
                let out = run_client(
                    &exe,
                    &[
                        "client-latency",
                        kind.as_str(),
                        &servers.socket(kind).display().to_string(),
                        &plan.latency_requests.to_string(),
                        &plan.latency_warmup.to_string(),
                        &first_user.to_string(),
                        &pin.map_or(-1, |c| c as i64).to_string(),
                    ],
                )?;
                let l = &mut by_kind[kind as usize];
                l.server_cpu += process_cpu() - cpu0;
                l.requests += (plan.latency_requests + plan.latency_warmup) as u64;
                l.samples.extend(
                    out.chunks_exact(4)
                        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
                );
                first_user += plan.latency_requests + plan.latency_warmup;
            }
        }
        ensure!(
            servers.oracle_refusals() == 0,
            "the oracle refused requests"
        );
        servers.stop()?;
        for l in &mut by_kind {
            l.samples.sort_unstable();
        }
        latency.push((pin, by_kind));
    }

    // 2. Throughput, scheduler free.
    let servers = Servers::start(None)?;
    let mut tput = [Throughput::default(), Throughput::default()];
    for round in 0..plan.throughput_rounds {
        for kind in order(round) {
            let cpu0 = process_cpu();
            let out = run_client(
                &exe,
                &[
                    "client-throughput",
                    kind.as_str(),
                    &servers.socket(kind).display().to_string(),
                    &CONNECTIONS.to_string(),
                    &plan.throughput_warmup.as_millis().to_string(),
                    &plan.throughput_measure.as_millis().to_string(),
                    &(round * 1_000_003).to_string(),
                ],
            )?;
            let server_cpu = process_cpu() - cpu0;
            let text = String::from_utf8(out)?;
            let f: Vec<f64> = text
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("client output {text:?}"))?;
            let [counted, secs, total, client_cpu_secs] = f[..] else {
                bail!("client output {text:?}");
            };
            let t = &mut tput[kind as usize];
            t.rounds.push(counted / secs);
            t.server_cpu += server_cpu;
            t.client_cpu += Duration::from_secs_f64(client_cpu_secs);
            t.requests += total as u64;
        }
    }
    let refusals = servers.oracle_refusals();
    let oracle_requests: u64 = servers
        .engine
        .stats
        .snapshot()
        .requests
        .iter()
        .map(|(_, n)| n)
        .sum();
    ensure!(refusals == 0, "the oracle refused {refusals} requests");
    servers.stop()?;

    print_report(plan, &latency, &tput, oracle_requests, started.elapsed());
    Ok(())
}

/// Alternate which server goes first, round by round.
fn order(round: usize) -> [Kind; 2] {
    if round % 2 == 0 {
        [Kind::Oracle, Kind::Echo]
    } else {
        [Kind::Echo, Kind::Oracle]
    }
}

fn print_report(
    plan: &Plan,
    latency: &[(Option<usize>, [Latency; 2])],
    tput: &[Throughput; 2],
    oracle_requests: u64,
    elapsed: Duration,
) {
    let ratio = |o: f64, e: f64| o / e;
    println!();
    println!(
        "Latency: one persistent connection, sequential ~60-byte rcpt requests, {} timed per server ({} rounds, alternating), client in its own process.",
        plan.latency_requests * plan.latency_rounds,
        plan.latency_rounds
    );
    println!();
    println!("| scheduling | measure | echo (floor) | oracle | oracle / echo | target |");
    println!("|---|---|---:|---:|---:|---|");
    for (pin, [oracle, echo]) in latency {
        let sched = match pin {
            None => "free (2 CPUs)".to_string(),
            Some(c) => format!("all on CPU {c}"),
        };
        for (name, q, target) in [
            ("p50 (µs)", 0.5, "≤ 1.5x"),
            ("p99 (µs)", 0.99, "≤ 1.5x"),
            ("p99.9 (µs)", 0.999, ""),
        ] {
            let (e, o) = (echo.percentile_us(q), oracle.percentile_us(q));
            println!(
                "| {sched} | {name} | {e:.1} | {o:.1} | {:.2}x | {target} |",
                ratio(o, e)
            );
        }
        let (e, o) = (echo.mean_us(), oracle.mean_us());
        println!(
            "| {sched} | mean (µs) | {e:.1} | {o:.1} | {:.2}x | |",
            ratio(o, e)
        );
        let (e, o) = (echo.cpu_us(), oracle.cpu_us());
        println!(
            "| {sched} | server CPU per request (µs) | {e:.1} | {o:.1} | {:.2}x | |",
            ratio(o, e)
        );
    }
    println!();
    println!(
        "Throughput: {CONNECTIONS} connections, one request in flight each, one client event-loop thread in its own process; median of {} rounds of {:.1} s.",
        plan.throughput_rounds,
        plan.throughput_measure.as_secs_f64()
    );
    println!();
    println!("| measure | echo (floor) | oracle | oracle / echo | target |");
    println!("|---|---:|---:|---:|---|");
    let [oracle, echo] = tput;
    let (e, o) = (echo.rate(), oracle.rate());
    println!(
        "| requests/s | {e:.0} | {o:.0} | {:.2}x | ≥ 0.7x |",
        ratio(o, e)
    );
    let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n as f64;
    let (e, o) = (
        per(echo.server_cpu, echo.requests),
        per(oracle.server_cpu, oracle.requests),
    );
    println!(
        "| server CPU per request (µs) | {e:.2} | {o:.2} | {:.2}x | |",
        ratio(o, e)
    );
    let (e, o) = (
        per(echo.client_cpu, echo.requests),
        per(oracle.client_cpu, oracle.requests),
    );
    println!(
        "| client CPU per request (µs) | {e:.2} | {o:.2} | {:.2}x | |",
        ratio(o, e)
    );
    println!(
        "| rounds (requests/s) | {} | {} | | |",
        list(&echo.rounds),
        list(&oracle.rounds)
    );
    println!();
    println!(
        "Every oracle reply was `accept` ({oracle_requests} requests in the throughput phase). Run time {:.0} s.",
        elapsed.as_secs_f64()
    );
}

fn list(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------
// Clients (run in their own process)
// ---------------------------------------------------------------------------------

/// `client-latency KIND SOCKET COUNT WARMUP FIRST_USER PIN_CPU`: sequential round trips
/// on one blocking connection; writes each timed round trip (ns, u32 LE) to stdout.
fn client_latency(args: &[String]) -> anyhow::Result<()> {
    let [kind, socket, count, warmup, first, pin] = args else {
        bail!("usage: client-latency KIND SOCKET COUNT WARMUP FIRST_USER PIN_CPU");
    };
    let kind = Kind::parse(kind)?;
    let (count, warmup, first): (usize, usize, usize) =
        (count.parse()?, warmup.parse()?, first.parse()?);
    if let Ok(cpu) = pin.parse::<usize>() {
        common::pin_this_thread(Some(cpu))?;
    }
    let mut stream = UnixStream::connect(socket).with_context(|| format!("connect {socket}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut samples = Vec::with_capacity(count * 4);
    let mut line = Vec::with_capacity(128);
    let mut reply = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    for n in 0..warmup + count {
        request_line(&mut line, first + n);
        reply.clear();
        let t = Instant::now();
        stream.write_all(&line)?;
        while reply.last() != Some(&b'\n') {
            let got = stream.read(&mut buf)?;
            ensure!(got > 0, "{} closed the connection", kind.as_str());
            reply.extend_from_slice(&buf[..got]);
        }
        let took = t.elapsed();
        ensure!(
            kind.reply_ok(&line, &reply),
            "{}: unexpected reply {:?} to {:?}",
            kind.as_str(),
            String::from_utf8_lossy(&reply),
            String::from_utf8_lossy(&line)
        );
        if n >= warmup {
            let ns = u32::try_from(took.as_nanos()).unwrap_or(u32::MAX);
            samples.extend_from_slice(&ns.to_le_bytes());
        }
    }
    std::io::stdout().write_all(&samples)?;
    Ok(())
}

/// `client-throughput KIND SOCKET CONNECTIONS WARMUP_MS MEASURE_MS FIRST_USER`: every
/// connection keeps one request in flight; prints `counted seconds total client_cpu_s`.
fn client_throughput(args: &[String]) -> anyhow::Result<()> {
    let [kind, socket, conns, warmup_ms, measure_ms, first] = args else {
        bail!("usage: client-throughput KIND SOCKET CONNECTIONS WARMUP_MS MEASURE_MS FIRST_USER");
    };
    let kind = Kind::parse(kind)?;
    let (conns, warmup, measure, first): (usize, u64, u64, usize) = (
        conns.parse()?,
        warmup_ms.parse()?,
        measure_ms.parse()?,
        first.parse()?,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let socket = PathBuf::from(socket);
    let (counted, secs, total) = runtime.block_on(async move {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut streams = Vec::with_capacity(conns);
        for _ in 0..conns {
            streams.push(
                tokio::net::UnixStream::connect(&socket)
                    .await
                    .with_context(|| format!("connect {}", socket.display()))?,
            );
        }
        let mut tasks = Vec::with_capacity(conns);
        for (c, stream) in streams.into_iter().enumerate() {
            let (done, stop) = (done.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut rd = BufReader::new(rd);
                let (mut line, mut reply) = (Vec::with_capacity(128), Vec::with_capacity(128));
                let mut n = first + c * (ACCOUNTS / conns.max(1));
                while !stop.load(Ordering::Relaxed) {
                    request_line(&mut line, n);
                    n += 1;
                    wr.write_all(&line).await?;
                    reply.clear();
                    ensure!(
                        rd.read_until(b'\n', &mut reply).await? > 0,
                        "{} closed the connection",
                        kind.as_str()
                    );
                    ensure!(
                        kind.reply_ok(&line, &reply),
                        "{}: unexpected reply {:?}",
                        kind.as_str(),
                        String::from_utf8_lossy(&reply)
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            }));
        }
        tokio::time::sleep(Duration::from_millis(warmup)).await;
        let (c0, t0) = (done.load(Ordering::Relaxed), Instant::now());
        tokio::time::sleep(Duration::from_millis(measure)).await;
        let (c1, secs) = (done.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await??;
        }
        anyhow::Ok((c1 - c0, secs, done.load(Ordering::Relaxed)))
    })?;
    println!(
        "{counted} {secs:.6} {total} {:.6}",
        process_cpu().as_secs_f64()
    );
    Ok(())
}
