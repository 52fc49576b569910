//! `access-oracle demo`: the product in two minutes, against the real Exim.
//!
//! Starts the oracle in-process on its embedded defaults, in a temporary directory,
//! writes the shipped Exim configuration (embedded in this binary, see
//! [`exim::EMBEDDED_CONFIG`]) next to it, and runs `exim -bh` sessions through it: a
//! brute force against one account (held after five wrong passwords, released by an
//! admin), then a burst of 250 recipients from another (deferred past the hourly
//! ceiling). Prints what Exim answered and each alert as it fires.

pub mod exim;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::admin::{self, AdminRequest};
use crate::config::{self, Overrides};
use crate::server::{self, ConfigSource};
use exim::{DemoExim, Dialogue};

/// Where the demo client connects from (a documentation address).
const ATTACKER_IP: &str = "203.0.113.7";
/// The bulk sender's address.
const SENDER_IP: &str = "198.51.100.20";

/// Runs the demo.
pub async fn run(lib: Option<PathBuf>, keep: bool) -> anyhow::Result<ExitCode> {
    let lib = exim::find_library(lib)?;
    exim::check_exim()?;
    let dir = exim::DemoDir::create(keep)?;
    let overrides = Overrides {
        exim_socket: Some(dir.path().join("oracle/exim.sock")),
        admin_socket: Some(dir.path().join("oracle/admin.sock")),
        state_dir: Some(dir.path().join("state")),
    };
    let mut raw = config::RawConfig::default();
    overrides.apply(&mut raw);
    // Exim's SMTP processes run as Debian-exim: give the socket to its group.
    if nix::unistd::Group::from_name(exim::EXIM_USER)?.is_some() {
        raw.server.exim_socket_group = Some(exim::EXIM_USER.into());
    }
    let cfg = config::Config::from_raw(raw).map_err(|p| anyhow::anyhow!("{p}"))?;
    let alert_file = cfg.alert_file.clone();
    let running = server::start(
        cfg.clone(),
        ConfigSource {
            path: None,
            overrides,
        },
    )
    .await?;
    let engine = running.engine.clone();
    println!("exim-access demo");
    println!(
        "  oracle on its embedded defaults, state in {}",
        dir.path().display()
    );
    println!(
        "  exim: the shipped exim4.conf.example with the library {}",
        lib.display()
    );
    let exim = DemoExim::new(&dir, &lib, &cfg.exim_socket.path)?;
    let mut shown = 0;
    let mut show_alerts = || {
        let alerts = engine.recent_alerts(usize::MAX);
        for a in alerts.iter().skip(shown) {
            println!(
                "  ALERT [{}] {}: {}",
                a.severity.as_str(),
                a.rule,
                a.summary
            );
        }
        shown = alerts.len();
    };

    println!(
        "\n1. Brute force: five wrong passwords for alice from {ATTACKER_IP}, then the right one"
    );
    for i in 1..=5 {
        let s = exim
            .session(ATTACKER_IP, &Dialogue::auth("alice", &format!("guess-{i}")))
            .await?;
        println!("  wrong password {i}:  {}", s.auth_reply());
        show_alerts();
    }
    let s = exim
        .session(ATTACKER_IP, &Dialogue::auth("alice", exim::PASSWORD))
        .await?;
    println!("  right password:     {}", s.auth_reply());
    let admin_socket = admin::ctl::AdminSocket {
        path: cfg.admin_socket.path.clone(),
        source: admin::ctl::SocketSource::Flag,
    };
    let req = AdminRequest::Release {
        user: "alice".into(),
    };
    let answer = tokio::task::spawn_blocking(move || {
        admin::ctl::ask(&admin_socket, &req)
            .map(|view| admin::ctl::render(&view, admin::ctl::DEFAULT_WIDTH))
    })
    .await??;
    println!("  admin: access-oracle ctl release alice\n    {answer}");
    let s = exim
        .session(ATTACKER_IP, &Dialogue::auth("alice", exim::PASSWORD))
        .await?;
    println!("  right password:     {}", s.auth_reply());

    println!("\n2. Burst: bob sends one message to 250 recipients from {SENDER_IP}");
    let s = exim
        .session(SENDER_IP, &Dialogue::burst("bob", exim::PASSWORD, 250))
        .await?;
    println!("  AUTH:               {}", s.auth_reply());
    let mut runs: Vec<(String, usize, usize)> = Vec::new();
    for (i, reply) in s.rcpt_replies().iter().enumerate() {
        match runs.last_mut() {
            Some((last, _, end)) if last == reply => *end = i + 1,
            _ => runs.push((reply.clone(), i + 1, i + 1)),
        }
    }
    for (reply, start, end) in runs {
        println!("  RCPT {start:>3}-{end:<3}:      {reply}");
    }
    show_alerts();

    // Let the sink write the last alerts before showing the file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.stop().await?;
    let lines = std::fs::read_to_string(&alert_file)
        .with_context(|| format!("cannot read {}", alert_file.display()))?
        .lines()
        .count();
    println!("\n{lines} alert(s) written to {}", alert_file.display());

    // The audit trail the oracle kept meanwhile (written and closed at its stop).
    let state = dir.path().join("state");
    let audit_dir = crate::audit::AuditConfig::default().dir(&state);
    let key = crate::audit::read_key(&crate::audit::AuditConfig::default(), &state)
        .map_err(anyhow::Error::msg)?;
    let verified = crate::audit::verify::verify(&audit_dir, &key)?;
    println!(
        "\n3. Audit trail: {} records in {}; access-oracle audit verify: ok",
        verified.records,
        audit_dir.display()
    );
    let query = crate::audit::search::Query {
        user: Some("alice".into()),
        ..Default::default()
    };
    let mut alice = Vec::new();
    crate::audit::search::search(&audit_dir, &query, None, |r| alice.push(r))?;
    println!("  access-oracle audit search --user alice:");
    for r in &alice {
        println!(
            "    {}  {:<7} {:<15} {}",
            r.time.strftime("%H:%M:%S"),
            r.kind.as_str(),
            r.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            crate::commands::audit::what(r)
        );
    }
    if keep {
        println!("kept {}", dir.path().display());
    }
    Ok(ExitCode::SUCCESS)
}
