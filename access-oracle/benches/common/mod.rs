//! What the socket and policy benchmarks share: CPU accounting, running the client
//! process, percentiles.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};

/// CPU time used so far by every thread of this process (the servers' runtime threads;
/// the main thread only waits for clients), from `/proc/self/task/*/schedstat`.
pub fn process_cpu() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                ns += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(ns)
}

/// Keeps the calling thread (and the threads it creates from now on) on `cpu` only,
/// or on every CPU again with `None`.
pub fn pin_this_thread(cpu: Option<usize>) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    let cpus = match cpu {
        Some(c) => c..c + 1,
        None => 0..std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    for c in cpus {
        set.set(c).context("a CPU number")?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin to CPU {cpu:?}"))
}

/// Runs this benchmark's binary again as a client process; returns what it printed.
pub fn run_client(exe: &Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run the client {}", exe.display()))?;
    ensure!(
        out.status.success(),
        "client {args:?} failed: {}",
        out.status
    );
    Ok(out.stdout)
}

/// The `q` quantile of sorted nanosecond samples, in microseconds.
pub fn percentile_us(sorted: &[u32], q: f64) -> f64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    f64::from(sorted[rank - 1]) / 1000.0
}
