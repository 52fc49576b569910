//! Alert delivery. The engine puts alerts on a bounded queue (never waiting: when it is
//! full the alert is counted as dropped and logged); one task takes them off and hands
//! each to every sink. Sinks: the JSON-lines file, and a structured log line.

pub mod jsonl;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::alert::Alert;

/// Delivers alerts from the queue until it closes or `stop` turns true; then delivers
/// what is still queued, flushes and returns.
pub async fn run(
    mut rx: mpsc::Receiver<Arc<Alert>>,
    mut file: jsonl::JsonlSink,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let alert = tokio::select! {
            a = rx.recv() => match a { Some(a) => a, None => break },
            _ = stop.changed() => break,
        };
        log_alert(&alert);
        file.write(&alert);
        // Drain whatever else is queued before the flush, so bursts cost one flush.
        while let Ok(more) = rx.try_recv() {
            log_alert(&more);
            file.write(&more);
        }
        file.flush();
    }
    while let Ok(more) = rx.try_recv() {
        log_alert(&more);
        file.write(&more);
    }
    file.flush();
}

fn log_alert(alert: &Alert) {
    tracing::warn!(
        target: "alert",
        rule = alert.rule,
        severity = alert.severity.as_str(),
        account = alert.account.as_deref().unwrap_or(""),
        ip = %alert.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        count = alert.count,
        response = alert.response.as_str(),
        expires = %alert.expires,
        "{}",
        alert.summary
    );
}
