//! `type = "exec"`: a command run for each alert, with the alert as one line of JSON on
//! its standard input (the record `alerts.jsonl` holds). The command is an argument
//! list run directly, never through a shell, so nothing in an alert (an account name an
//! attacker chose) can become shell syntax.
//!
//! ```toml
//! [[sinks]]
//! name = "pager"
//! type = "exec"
//! command = ["/usr/local/bin/page-oncall", "--team", "mail"]
//! timeout_ms = 5000     # the whole run; past it the command is killed and the alert failed
//! retries = 2           # more tries after a failure, 1 s then 2 s apart
//! min_severity = "high"
//! ```
//!
//! A run that exits 0 delivered the alert; a non-zero exit, a kill at the timeout or a
//! command that cannot be started failed it (counted, and logged with the first line of
//! what it wrote to standard error, escaped). The command runs as the oracle's user, with
//! an empty environment but `PATH=/usr/sbin:/usr/bin:/sbin:/bin` and `LC_ALL=C`; its standard output is
//! discarded. One command runs at a time per sink: a slow one holds this sink's queue
//! only, never the verdicts or another sink.
//!
//! `format = "ecs"` gives the command each alert (or record) as an Elastic Common Schema
//! document ([`super::ecs`]) instead.
//!
//! With `stream = "audit"` ([`super::stream`]) the command is run once per batch of
//! audit records (up to 256, in order), each record one line of JSON on its standard
//! input (the trail's line, decrypted, or its ECS document). Exit status 0 delivers the
//! whole batch; anything else delivers none of it, and the same records are offered
//! again after a pause (the stream's own, doubling from 1 s to 60 s; `retries` does
//! not apply). A command that stored part of a batch before it failed sees those
//! records again: each carries its `seq` (`event.sequence`) and `chain` (`event.id`)
//! to deduplicate on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::file::Format;
use crate::command::RunError;
use super::{AuditItem, BuildContext, Delivery, Forward, Forwarding, Outcome, Sink, SinkConfig};
use crate::alert::Alert;

/// `[[sinks]] type = "exec"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program (an absolute path) and its arguments, run without a shell.
    pub command: Vec<String>,
    /// How long one run may take, in milliseconds; default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// More tries after a failed run, each after a pause doubling from 1 s; default 2.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// What the command reads: `json` (default: the alert as in `alerts.jsonl`, the
    /// record as the trail holds it) or `ecs` (Elastic Common Schema).
    #[serde(default)]
    pub format: Format,
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_retries() -> u32 {
    2
}

/// The longest a run may be given.
const MAX_TIMEOUT_MS: u64 = 600_000;

impl SinkConfig for ExecConfig {
    fn validate(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        match self.command.first() {
            None => problems.push("command must name a program: [\"/path/to/program\", ...]".into()),
            Some(program) if !program.starts_with('/') => problems.push(format!(
                "command's program must be an absolute path (it is run without a shell or a search of PATH), got {program:?}"
            )),
            Some(_) => {}
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            problems.push("command's arguments cannot hold a NUL".into());
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            problems.push(format!(
                "timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {}",
                self.timeout_ms
            ));
        }
        if self.retries > 10 {
            problems.push(format!("retries must be at most 10, got {}", self.retries));
        }
    }

    fn target(&self, _ctx: &BuildContext) -> String {
        self.command.join(" ")
    }

    fn preflight(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        use std::os::unix::fs::PermissionsExt;
        let Some(program) = self.command.first() else {
            return;
        };
        match std::fs::metadata(program) {
            Ok(meta) if !meta.is_file() => problems.push(format!(
                "command {program} is {}, not a program",
                crate::files::describe_type(&meta)
            )),
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                problems.push(format!("command {program} is not executable"))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("command {program}: {e}")),
        }
    }

    fn build(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Sink>> {
        Ok(Box::new(self.sink()))
    }

    fn forwards_audit(&self) -> bool {
        true
    }

    fn build_forwarder(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Forward>> {
        Ok(Box::new(self.sink()))
    }
}

impl ExecConfig {
    fn sink(&self) -> ExecSink {
        ExecSink {
            program: PathBuf::from(&self.command[0]),
            args: self.command[1..].to_vec(),
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            format: self.format,
        }
    }
}

/// The running exec sink.
#[derive(Debug)]
pub struct ExecSink {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
    retries: u32,
    format: Format,
}

impl ExecSink {
    /// One run with `input` on standard input. A command that does not read its input
    /// is not a failure of ours.
    async fn run(&self, input: &[u8]) -> Result<(), RunError> {
        crate::command::run(&self.program, &self.args, Some(input), self.timeout)
            .await?
            .success()
            .map(drop)
    }
}

impl Sink for ExecSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            let mut outcome = Outcome::default();
            for alert in batch {
                let input = match self.format {
                    Format::Json => serde_json::to_vec(&**alert),
                    Format::Ecs => serde_json::to_vec(&super::ecs::alert(alert)),
                };
                let mut input = match input {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!(error = %e, "exec sink: the alert does not serialize");
                        outcome.failed += 1;
                        continue;
                    }
                };
                input.push(b'\n');
                let mut pause = Duration::from_secs(1);
                let mut tries = 0;
                loop {
                    match self.run(&input).await {
                        Ok(()) => {
                            outcome.delivered += 1;
                            break;
                        }
                        Err(e) if tries < self.retries => {
                            tracing::warn!(program = %self.program.display(), error = %e,
                                retry_in_secs = pause.as_secs(), "exec sink: the command failed");
                            tokio::time::sleep(pause).await;
                            pause *= 2;
                            tries += 1;
                            outcome.retried += 1;
                        }
                        Err(e) => {
                            tracing::error!(program = %self.program.display(), error = %e,
                                rule = alert.rule, "exec sink: the command failed; alert not delivered");
                            outcome.failed += 1;
                            break;
                        }
                    }
                }
            }
            outcome
        })
    }
}

impl Forward for ExecSink {
    fn forward<'a>(&'a mut self, batch: &'a [AuditItem]) -> Forwarding<'a> {
        Box::pin(async move {
            let mut input = Vec::with_capacity(batch.len() * 512);
            for item in batch {
                match self.format {
                    Format::Json => input.extend_from_slice(item.line.as_bytes()),
                    Format::Ecs => {
                        input.extend_from_slice(super::ecs::item(item).to_string().as_bytes())
                    }
                }
                input.push(b'\n');
            }
            match self.run(&input).await {
                Ok(()) => batch.len(),
                Err(e) => {
                    tracing::warn!(program = %self.program.display(), error = %e,
                        records = batch.len(), "exec sink: the command failed; the audit records are offered again");
                    0
                }
            }
        })
    }
}
