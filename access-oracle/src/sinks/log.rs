//! `type = "log"`: one structured log line per alert (target `alert`, level warn), with
//! the alert's rule, severity, account, address, count, response and expiry as fields.
//! The default `log` sink is one of these; it has no settings of its own.
//!
//! ```toml
//! [[sinks]]
//! name = "log"
//! type = "log"
//! min_severity = "medium"
//! ```

use std::sync::Arc;

use serde::Deserialize;

use super::{BuildContext, Delivery, Outcome, Sink, SinkConfig};
use crate::alert::Alert;

/// `[[sinks]] type = "log"`: no settings of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {}

impl SinkConfig for LogConfig {
    fn validate(&self, _ctx: &BuildContext, _problems: &mut Vec<String>) {}

    fn target(&self, _ctx: &BuildContext) -> String {
        "the log".into()
    }

    fn build(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Sink>> {
        Ok(Box::new(LogSink))
    }
}

/// The running log sink.
#[derive(Debug)]
pub struct LogSink;

impl Sink for LogSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            for alert in batch {
                log_alert(alert);
            }
            Outcome {
                delivered: batch.len() as u64,
                ..Outcome::default()
            }
        })
    }
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
