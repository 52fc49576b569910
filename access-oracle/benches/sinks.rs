//! Verdict latency with every alert sink on, beside the same oracle with them off,
//! measured in the same run (issue 13: a sink never delays a verdict).
//!
//! Run: `cargo bench -p access-oracle --bench sinks` (about a minute; prints a markdown
//! table). Results are in `docs/PERFORMANCE.md`.
//!
//! * Two oracles in this process (`server::start`, each in its own temporary
//!   directory): **off** delivers nothing (the two default sinks at
//!   `min_severity = "critical"`, above every alert here); **on** runs every sink
//!   type at once, each taking every alert ungrouped (`group_secs = 0`): the JSON file,
//!   an ECS file, the log, an exec command (`tee /dev/null`, a process per alert), a
//!   webhook to an HTTP receiver on loopback, syslog over UDP and over TCP to loopback
//!   readers, and e-mail to a sendmail that reads the message and exits.
//! * Every request is a failed SMTP AUTH of a new account from a new address, and
//!   `failed_logins_account` trips at the first failure: **every verdict raises an
//!   alert**, the worst case for the sinks.
//! * One client thread, one persistent connection, one request at a time (what the Exim
//!   library does); the round trip's p50 / p99 / mean. Rounds alternate between the two
//!   oracles so that drift of a shared machine hits both.
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs a few hundred requests only,
//! as a smoke test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use access_oracle::config::{Config, Overrides, RawConfig};
use access_oracle::server::{self, ConfigSource, Running};
use anyhow::{Context, ensure};

struct Plan {
    requests: usize,
    rounds: usize,
}

/// Loopback receivers for the sinks that need a peer; they read and discard.
struct Receivers {
    http: u16,
    udp: u16,
    tcp: u16,
}

impl Receivers {
    fn start() -> anyhow::Result<Receivers> {
        let http = TcpListener::bind("127.0.0.1:0")?;
        let http_port = http.local_addr()?.port();
        std::thread::spawn(move || {
            for stream in http.incoming().flatten() {
                std::thread::spawn(move || serve_http(stream));
            }
        });
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let udp_port = udp.local_addr()?.port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while udp.recv(&mut buf).is_ok() {}
        });
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let tcp_port = tcp.local_addr()?.port();
        std::thread::spawn(move || {
            for mut stream in tcp.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        Ok(Receivers {
            http: http_port,
            udp: udp_port,
            tcp: tcp_port,
        })
    }
}

/// Answers every request on a keep-alive connection with 200.
fn serve_http(stream: std::net::TcpStream) {
    // As HTTP servers do: without it, each answer waits for the client's delayed ACK.
    let _ = stream.set_nodelay(true);
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

const COMMON: &str = r#"
[rules.failed_logins_account]
threshold = 1
"#;

fn off_config() -> String {
    format!(
        r#"{COMMON}
[[sinks]]
name = "alerts"
type = "file"
min_severity = "critical"

[[sinks]]
name = "log"
type = "log"
min_severity = "critical"
"#
    )
}

fn on_config(dir: &Path, r: &Receivers) -> anyhow::Result<String> {
    let sendmail = dir.join("sendmail");
    std::fs::write(&sendmail, "#!/bin/sh\ncat >/dev/null\n")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755))?;
    let d = dir.display();
    Ok(format!(
        r#"{COMMON}
[[sinks]]
name = "alerts"
type = "file"
path = "{d}/alerts.jsonl"
min_severity = "info"

[[sinks]]
name = "ecs"
type = "file"
path = "{d}/alerts.ecs.jsonl"
format = "ecs"
min_severity = "info"

[[sinks]]
name = "log"
type = "log"
min_severity = "info"

[[sinks]]
name = "exec"
type = "exec"
command = ["/usr/bin/tee", "/dev/null"]
min_severity = "info"
group_secs = 0

[[sinks]]
name = "webhook"
type = "webhook"
url = "http://127.0.0.1:{http}/hook"
format = "json"
min_severity = "info"
group_secs = 0

[[sinks]]
name = "syslog-udp"
type = "syslog"
address = "127.0.0.1:{udp}"
transport = "udp"
min_severity = "info"

[[sinks]]
name = "syslog-tcp"
type = "syslog"
address = "127.0.0.1:{tcp}"
transport = "tcp"
min_severity = "info"

[[sinks]]
name = "email"
type = "email"
to = ["postmaster@example.org"]
from = "exim-access@example.org"
sendmail = "{sendmail}"
min_severity = "info"
group_secs = 0
"#,
        http = r.http,
        udp = r.udp,
        tcp = r.tcp,
        sendmail = sendmail.display(),
    ))
}

struct Oracle {
    runtime: tokio::runtime::Runtime,
    running: Running,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Oracle {
    fn start(
        name: &str,
        config_text: impl FnOnce(&Path) -> anyhow::Result<String>,
    ) -> anyhow::Result<Oracle> {
        let dir = tempfile::tempdir()?;
        let text = config_text(dir.path())?;
        let mut raw: RawConfig = toml::from_str(&text).with_context(|| format!("{name} config"))?;
        let overrides = Overrides {
            exim_socket: Some(dir.path().join("exim.sock")),
            admin_socket: Some(dir.path().join("admin.sock")),
            state_dir: Some(dir.path().join("state")),
        };
        overrides.apply(&mut raw);
        let config = Config::from_raw(raw).map_err(|p| anyhow::anyhow!("{name}: {p}"))?;
        let socket = config.exim_socket.path.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let running = runtime.block_on(server::start(
            config,
            ConfigSource {
                path: None,
                overrides,
            },
        ))?;
        Ok(Oracle {
            runtime,
            running,
            socket,
            _dir: dir,
        })
    }

    /// `n` failed AUTHs of new accounts from new addresses, one at a time; the round
    /// trips.
    fn measure(&self, round: usize, n: usize) -> anyhow::Result<Vec<Duration>> {
        let mut s = UnixStream::connect(&self.socket)?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut times = Vec::with_capacity(n);
        let mut reply = String::new();
        for i in 0..n {
            let k = round * n + i;
            let line = format!(
                "auth user=r{round}u{i} ip=10.{}.{}.{} result=fail mech=PLAIN\n",
                (k >> 16) & 255,
                (k >> 8) & 255,
                k & 255
            );
            let t = Instant::now();
            s.write_all(line.as_bytes())?;
            reply.clear();
            r.read_line(&mut reply)?;
            times.push(t.elapsed());
            ensure!(!reply.is_empty(), "the oracle closed the connection");
        }
        Ok(times)
    }

    fn sinks(&self) -> String {
        let snap = self.running.engine.stats.snapshot();
        snap.sinks
            .iter()
            .map(|k| format!("{} {}/{}/{}", k.name, k.delivered, k.dropped, k.failed))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn alerts(&self) -> u64 {
        self.running.engine.stats.snapshot().alerts_raised
    }

    fn stop(self) -> anyhow::Result<()> {
        self.runtime.block_on(self.running.stop())?;
        self.runtime.shutdown_timeout(Duration::from_secs(5));
        Ok(())
    }
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() -> anyhow::Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let plan = if bench {
        Plan {
            requests: 5000,
            rounds: 4,
        }
    } else {
        Plan {
            requests: 200,
            rounds: 1,
        }
    };
    let receivers = Receivers::start()?;
    let off = Oracle::start("off", |_| Ok(off_config()))?;
    let on = Oracle::start("on", |d| on_config(d, &receivers))?;
    let mut t_off = Vec::new();
    let mut t_on = Vec::new();
    for round in 0..plan.rounds {
        // Alternate which goes first.
        if round % 2 == 0 {
            t_off.extend(off.measure(round, plan.requests)?);
            t_on.extend(on.measure(round, plan.requests)?);
        } else {
            t_on.extend(on.measure(round, plan.requests)?);
            t_off.extend(off.measure(round, plan.requests)?);
        }
    }
    let alerts_on = on.alerts();
    let alerts_off = off.alerts();
    ensure!(
        alerts_on as usize >= plan.requests * plan.rounds,
        "every verdict must raise an alert (on: {alerts_on})"
    );
    // Let the sinks catch up a little before their counters are read.
    std::thread::sleep(Duration::from_secs(if bench { 5 } else { 1 }));
    let sinks_on = on.sinks();
    t_off.sort();
    t_on.sort();
    let mean =
        |v: &[Duration]| v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len() as f64 * 1e6;
    println!("| sinks | requests | alerts | p50 µs | p99 µs | mean µs |");
    println!("|---|---|---|---|---|---|");
    for (name, t, a) in [
        ("off", &t_off, alerts_off),
        ("on (8 sinks)", &t_on, alerts_on),
    ] {
        println!(
            "| {name} | {} | {a} | {:.1} | {:.1} | {:.1} |",
            t.len(),
            pct(t, 0.5),
            pct(t, 0.99),
            mean(t)
        );
    }
    println!(
        "\nratio on/off: p50 {:.2}x, p99 {:.2}x, mean {:.2}x",
        pct(&t_on, 0.5) / pct(&t_off, 0.5),
        pct(&t_on, 0.99) / pct(&t_off, 0.99),
        mean(&t_on) / mean(&t_off)
    );
    println!("\nsinks on (delivered/dropped/failed): {sinks_on}");
    on.stop()?;
    off.stop()?;
    Ok(())
}
