//! `type = "email"`: alerts as e-mail through the local MTA's `sendmail` (Exim's own,
//! `/usr/sbin/sendmail`), a readable text body and the alert's JSON attached.
//!
//! ```toml
//! [[sinks]]
//! name = "mail-team"
//! type = "email"
//! to = ["postmaster@example.org", "Mail team <mail-team@example.org>"]
//! from = "exim-access@mx1.example.org"   # default exim-access@<this host's name>
//! sendmail = "/usr/sbin/sendmail"          # the default; Exim provides it
//! subject_prefix = "[exim-access]"         # the default
//! timeout_ms = 30000    # one run of sendmail; past it sendmail is killed
//! retries = 2           # more tries after a failure, 1 s then 2 s apart
//! min_severity = "medium"
//! group_secs = 300      # the default for this type: one e-mail per rule and account per 5 min
//! ```
//!
//! Each batch the sink's task hands over (one alert, a grouped notification, or what
//! queued up while the last e-mail was being sent) becomes one e-mail: the subject is
//! `subject_prefix` and the alert's headline ([`Alert::headline`]: the summary, with
//! the group's count), the body is [`Alert::describe`] (each alert's, for a batch), and
//! the alert is attached as `alert.json` (`application/json`; a batch as `alerts.json`
//! holding an array). The message is built with lettre's `MessageBuilder`, which
//! encodes every header; the subject's control characters are escaped first and it is
//! cut to [`MAX_SUBJECT_CHARS`], so an account name with a CR/LF cannot add a header.
//! It carries `Auto-Submitted: auto-generated` (RFC 3834), so vacation responders stay
//! quiet.
//!
//! Sending runs `sendmail -i -f FROM -- TO...` (the command line of lettre's sendmail
//! transport) directly, never through a shell, with the message on its standard
//! input, an empty environment but `PATH` and `LC_ALL=C`, and a timeout after which it is killed.
//! Exit status 0 delivered the batch; anything else is retried, then counted as
//! failed (and logged with the first line sendmail wrote to standard error). Exim
//! ignores `-f` from a user it does not trust (the oracle's, normally) and puts the
//! sender in a `Sender:` header instead: that is expected. One sendmail runs at a time
//! per sink: a slow MTA holds this sink's queue only.
//!
//! The parts [`super::owner`] shares (addresses, the sendmail run, the message) are
//! public here.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use serde::Deserialize;

use super::{BuildContext, Delivery, Outcome, Sink, SinkConfig};
use crate::alert::Alert;

/// `[[sinks]] type = "email"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Who gets the alerts: addresses, plain (`"ops@example.org"`) or with a name
    /// (`"Mail team <ops@example.org>"`); at least one.
    pub to: Vec<String>,
    /// The sender (`From:` and `sendmail -f`); default `exim-access@<this host's name>`.
    #[serde(default)]
    pub from: Option<String>,
    /// The sendmail program (an absolute path), run without a shell; default
    /// `/usr/sbin/sendmail`, which Exim provides.
    #[serde(default = "default_sendmail")]
    pub sendmail: PathBuf,
    /// What every subject starts with; default `[exim-access]`.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// How long one run of sendmail may take, in milliseconds; default 30000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// More tries after a failed run, each after a pause doubling from 1 s; default 2.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// Where Exim (and every MTA) puts its sendmail interface.
pub const DEFAULT_SENDMAIL: &str = "/usr/sbin/sendmail";

/// The longest subject, in characters, before it is cut (with `...`).
pub const MAX_SUBJECT_CHARS: usize = 200;

/// The most recipients of one sink.
const MAX_RECIPIENTS: usize = 100;

/// The longest a run of sendmail may be given.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// `/usr/sbin/sendmail`.
pub fn default_sendmail() -> PathBuf {
    PathBuf::from(DEFAULT_SENDMAIL)
}

fn default_subject_prefix() -> String {
    "[exim-access]".into()
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_retries() -> u32 {
    2
}

/// `exim-access@<this host's name>`, the sender when none is set.
pub fn default_from() -> String {
    let host = dns_lookup::get_hostname().unwrap_or_default();
    let host = host.trim();
    format!(
        "exim-access@{}",
        if host.is_empty() { "localhost" } else { host }
    )
}

/// A configured address (`to`, `from`): `"a@example.org"` or `"Name <a@example.org>"`,
/// without control characters.
pub fn configured_mailbox(key: &str, text: &str) -> Result<Mailbox, String> {
    if text.chars().any(char::is_control) {
        return Err(format!(
            "{key} holds a control character: {}",
            crate::text::escape_controls(text)
        ));
    }
    Mailbox::from_str(text).map_err(|e| {
        format!(
            "{key} is not an e-mail address ({e}): {}",
            crate::text::escape_controls(text)
        )
    })
}

/// The sender: `from` as configured, else [`default_from`].
pub fn sender(key: &str, from: Option<&str>) -> Result<Mailbox, String> {
    match from {
        Some(f) => configured_mailbox(key, f),
        None => configured_mailbox(key, &default_from()).map_err(|e| {
            format!("{e}; this host's name does not make a sender address: set {key}")
        }),
    }
}

/// Checks a sendmail path's settings: absolute, no NUL.
pub fn check_sendmail(key: &str, path: &Path, problems: &mut Vec<String>) {
    super::absolute(key, path, problems);
}

/// Looks at the sendmail program: it exists, is a regular file and is executable.
pub fn preflight_sendmail(key: &str, path: &Path, problems: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => problems.push(format!(
            "{key} {} is {}, not a program",
            path.display(),
            crate::files::describe_type(&meta)
        )),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            problems.push(format!("{key} {} is not executable", path.display()))
        }
        Ok(_) => {}
        Err(e) => problems.push(format!(
            "{key} {}: {e} (is an MTA installed? Exim provides /usr/sbin/sendmail)",
            path.display()
        )),
    }
}

/// A subject line: `prefix` and `text`, control characters escaped, cut to
/// [`MAX_SUBJECT_CHARS`].
pub fn subject_line(prefix: &str, text: &str) -> String {
    let whole = if prefix.is_empty() {
        text.to_string()
    } else {
        format!("{prefix} {text}")
    };
    let clean = crate::text::escape_controls(&whole);
    if clean.chars().count() <= MAX_SUBJECT_CHARS {
        return clean.into_owned();
    }
    let mut cut: String = clean.chars().take(MAX_SUBJECT_CHARS - 3).collect();
    cut.push_str("...");
    cut
}

/// One e-mail to build: who, what, and an optional attachment.
#[derive(Debug, Clone)]
pub struct Letter<'a> {
    /// `From:` and the envelope sender.
    pub from: &'a Mailbox,
    /// `To:` and the envelope recipients.
    pub to: &'a [Mailbox],
    /// The subject, already made safe ([`subject_line`]).
    pub subject: String,
    /// The text body.
    pub body: String,
    /// A text file attached: its name, its content type and its text (lines end in
    /// CRLF once encoded, so a quoted-printable JSON reads as JSON).
    pub attachment: Option<(&'a str, &'a str, String)>,
}

impl Letter<'_> {
    /// The message: `From`, `To`, `Subject`, `Date`, `Message-ID`, `Auto-Submitted`,
    /// and the text body alone or with the attachment (`multipart/mixed`). lettre
    /// encodes every header value (RFC 2047) and chooses each part's transfer encoding.
    pub fn message(self) -> Result<Message, String> {
        let domain = self.from.email.domain().to_string();
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(self.subject)
            .message_id(Some(message_id(&domain)))
            .header(auto_submitted());
        for to in self.to {
            builder = builder.to(to.clone());
        }
        let body = SinglePart::plain(self.body);
        let built = match self.attachment {
            None => builder.singlepart(body),
            Some((name, kind, text)) => {
                let kind =
                    ContentType::parse(kind).map_err(|e| format!("content type {kind}: {e}"))?;
                builder.multipart(
                    MultiPart::mixed()
                        .singlepart(body)
                        .singlepart(Attachment::new(name.to_string()).body(text, kind)),
                )
            }
        };
        built.map_err(|e| format!("cannot build the message: {e}"))
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834): automatic, not to be answered by a
/// vacation responder.
fn auto_submitted() -> AutoSubmitted {
    AutoSubmitted
}

/// The `Auto-Submitted` header.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// `<random@domain>`.
fn message_id(domain: &str) -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: the time and the process make it unique enough.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..12].copy_from_slice(&std::process::id().to_be_bytes());
    }
    format!("<{}.exim-access@{domain}>", hex::encode(bytes))
}

/// A sendmail program, how long it may run and how often it is tried.
#[derive(Debug, Clone)]
pub struct Sendmail {
    /// The program.
    pub program: PathBuf,
    /// One run's limit.
    pub timeout: Duration,
    /// More tries after a failed run.
    pub retries: u32,
}

/// Why one run of sendmail failed.
pub use crate::command::RunError as SendError;

/// What sending one message came to.
#[derive(Debug)]
pub struct Sent {
    /// `Ok` when sendmail took it, else the last failure.
    pub result: Result<(), SendError>,
    /// Runs after a failed one.
    pub retried: u64,
}

impl Sendmail {
    /// The arguments: `-i -f FROM -- TO...` (lettre's sendmail transport's).
    fn args(message: &Message) -> Vec<String> {
        let envelope = message.envelope();
        let mut args = vec!["-i".to_string()];
        if let Some(from) = envelope.from() {
            args.push("-f".into());
            args.push(from.to_string());
        }
        args.push("--".into());
        args.extend(envelope.to().iter().map(ToString::to_string));
        args
    }

    /// One run with the message on standard input. A sendmail that stops reading (it
    /// refused the message) says why in its exit status: that is the error to report,
    /// not the broken pipe.
    async fn run(&self, message: &Message, bytes: &[u8]) -> Result<(), SendError> {
        let ran = crate::command::run(&self.program, &Self::args(message), Some(bytes), self.timeout)
            .await?
            .success()?;
        ran.written.map_err(SendError::Start)
    }

    /// Sends `message`, retrying a failed run after pauses doubling from 1 s; `what`
    /// names the sender in the log.
    pub async fn send(&self, what: &str, message: &Message) -> Sent {
        let bytes = message.formatted();
        let mut pause = Duration::from_secs(1);
        let mut retried = 0;
        loop {
            match self.run(message, &bytes).await {
                Ok(()) => {
                    return Sent {
                        result: Ok(()),
                        retried,
                    };
                }
                Err(e) if retried < u64::from(self.retries) => {
                    tracing::warn!(sink = what, program = %self.program.display(), error = %e,
                        retry_in_secs = pause.as_secs(), "sendmail failed");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    retried += 1;
                }
                Err(e) => {
                    return Sent {
                        result: Err(e),
                        retried,
                    };
                }
            }
        }
    }
}

impl SinkConfig for EmailConfig {
    fn validate(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        if self.to.is_empty() {
            problems.push("to must name at least one address: to = [\"ops@example.org\"]".into());
        }
        if self.to.len() > MAX_RECIPIENTS {
            problems.push(format!(
                "to names {} addresses; at most {MAX_RECIPIENTS} (use a list address)",
                self.to.len()
            ));
        }
        for (i, to) in self.to.iter().enumerate() {
            if let Err(e) = configured_mailbox(&format!("to[{i}]"), to) {
                problems.push(e);
            }
        }
        if let Err(e) = sender("from", self.from.as_deref()) {
            problems.push(e);
        }
        check_sendmail("sendmail", &self.sendmail, problems);
        if self.subject_prefix.chars().count() > 100
            || self.subject_prefix.chars().any(char::is_control)
        {
            problems.push(format!(
                "subject_prefix must be at most 100 characters without control characters, got {:?}",
                crate::text::escape_controls(&self.subject_prefix)
            ));
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
        format!("{} to {}", self.sendmail.display(), self.to.join(", "))
    }

    fn preflight(&self, _ctx: &BuildContext, problems: &mut Vec<String>) {
        preflight_sendmail("sendmail", &self.sendmail, problems);
    }

    fn build(&self, _ctx: &BuildContext) -> std::io::Result<Box<dyn Sink>> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let to = self
            .to
            .iter()
            .enumerate()
            .map(|(i, t)| configured_mailbox(&format!("to[{i}]"), t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        Ok(Box::new(EmailSink {
            from: sender("from", self.from.as_deref()).map_err(invalid)?,
            to,
            subject_prefix: self.subject_prefix.clone(),
            sendmail: Sendmail {
                program: self.sendmail.clone(),
                timeout: Duration::from_millis(self.timeout_ms),
                retries: self.retries,
            },
        }))
    }
}

/// The running e-mail sink.
#[derive(Debug)]
pub struct EmailSink {
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: String,
    sendmail: Sendmail,
}

impl EmailSink {
    /// The e-mail for a batch of alerts (one alert, or several listed in one body).
    pub fn message(&self, batch: &[Arc<Alert>]) -> Result<Message, String> {
        let Some(first) = batch.first() else {
            return Err("no alert to send".into());
        };
        let (subject, body, name, json) = if batch.len() == 1 {
            let json = serde_json::to_string_pretty(&**first).map_err(|e| e.to_string())?;
            let mut body = first.describe();
            body.push_str("\n-- \nThe alert as JSON is attached (alert.json).\n");
            (first.headline(), body, "alert.json", json)
        } else {
            let all: Vec<&Alert> = batch.iter().map(|a| &**a).collect();
            let json = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
            (
                format!(
                    "{} alerts: {} (and {} more)",
                    batch.len(),
                    first.headline(),
                    batch.len() - 1
                ),
                batch_body(batch),
                "alerts.json",
                json,
            )
        };
        Letter {
            from: &self.from,
            to: &self.to,
            subject: subject_line(&self.subject_prefix, &subject),
            body,
            attachment: Some((name, "application/json", json)),
        }
        .message()
    }
}

/// The text of several alerts: a numbered list of headlines, then each described.
fn batch_body(batch: &[Arc<Alert>]) -> String {
    use std::fmt::Write as _;
    let n = batch.len();
    let mut out = format!("{n} alerts:\n\n");
    for (i, a) in batch.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3}. {}",
            i + 1,
            crate::text::escape_controls(&a.headline())
        );
    }
    for (i, a) in batch.iter().enumerate() {
        let _ = write!(
            out,
            "\n{}\nAlert {} of {n}\n\n{}",
            "=".repeat(72),
            i + 1,
            a.describe()
        );
    }
    out.push_str("\n-- \nThe alerts as JSON are attached (alerts.json, an array).\n");
    out
}

impl Sink for EmailSink {
    fn deliver<'a>(&'a mut self, batch: &'a [Arc<Alert>]) -> Delivery<'a> {
        Box::pin(async move {
            let n = batch.len() as u64;
            let message = match self.message(batch) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, alerts = n, "email sink: alerts not sent");
                    return Outcome {
                        failed: n,
                        ..Outcome::default()
                    };
                }
            };
            let sent = self.sendmail.send("email", &message).await;
            match sent.result {
                Ok(()) => Outcome {
                    delivered: n,
                    failed: 0,
                    retried: sent.retried,
                },
                Err(e) => {
                    tracing::error!(program = %self.sendmail.program.display(), error = %e,
                        alerts = n, "email sink: sendmail failed; alerts not sent");
                    Outcome {
                        delivered: 0,
                        failed: n,
                        retried: sent.retried,
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use jiff::Timestamp;

    use super::*;
    use crate::alert::Group;
    use crate::rules::{Response, Severity};

    fn alert(account: &str, summary: &str) -> Arc<Alert> {
        let time = Timestamp::from_second(1_800_000_000).unwrap();
        Arc::new(Alert {
            time,
            rule: "failed_logins_account",
            severity: Severity::High,
            account: Some(account.into()),
            ip: "192.0.2.7".parse().ok(),
            rdns: None,
            protocol: Some("smtp".into()),
            count: 5,
            counts: serde_json::json!({ "failed_logins": 5 }),
            threshold: 5,
            window_secs: 300,
            response: Response::HoldAccount,
            expires: time,
            summary: summary.into(),
            group: None,
            context: None,
            observed: false,
        })
    }

    fn config(extra: &str) -> EmailConfig {
        toml::from_str(&format!(
            "to = [\"ops@example.org\", \"Mail team <team@example.org>\"]\nfrom = \"oracle@mx.example.org\"\n{extra}"
        ))
        .unwrap()
    }

    fn ctx() -> BuildContext {
        BuildContext::new(
            "/var/lib/access-oracle".into(),
            "/var/lib/access-oracle/alerts.jsonl".into(),
            &crate::audit::AuditConfig::default(),
        )
    }

    fn sink(extra: &str) -> EmailSink {
        let c = config(extra);
        EmailSink {
            from: sender("from", c.from.as_deref()).unwrap(),
            to: c
                .to
                .iter()
                .map(|t| configured_mailbox("to", t).unwrap())
                .collect(),
            subject_prefix: c.subject_prefix.clone(),
            sendmail: Sendmail {
                program: c.sendmail.clone(),
                timeout: Duration::from_millis(c.timeout_ms),
                retries: c.retries,
            },
        }
    }

    /// The header block (unfolded) and the body of a formatted message.
    fn split(message: &Message) -> (Vec<String>, String) {
        let text = String::from_utf8(message.formatted()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut headers: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                headers.last_mut().unwrap().push_str(line);
            } else {
                headers.push(line.to_string());
            }
        }
        (headers, body.to_string())
    }

    fn header<'a>(headers: &'a [String], name: &str) -> Vec<&'a str> {
        headers
            .iter()
            .filter_map(|h| {
                let (n, v) = h.split_once(':')?;
                n.eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    /// The parts of a multipart body: (headers, content), content decoded from base64
    /// or quoted-printable when so encoded.
    fn parts(message: &Message) -> Vec<(Vec<String>, Vec<u8>)> {
        let (headers, body) = split(message);
        let ctype = header(&headers, "Content-Type")[0].to_string();
        let boundary = ctype
            .split("boundary=\"")
            .nth(1)
            .and_then(|b| b.split('"').next())
            .unwrap()
            .to_string();
        body.split(&format!("--{boundary}"))
            .skip(1)
            .filter(|p| !p.starts_with("--"))
            .map(|p| {
                let p = p.trim_start_matches("\r\n");
                let (head, content) = p.split_once("\r\n\r\n").unwrap();
                let hs: Vec<String> = head.split("\r\n").map(str::to_string).collect();
                let encoding = header(&hs, "Content-Transfer-Encoding")
                    .first()
                    .map(|e| e.to_ascii_lowercase())
                    .unwrap_or_default();
                let content = content.trim_end_matches("\r\n");
                let bytes = match encoding.as_str() {
                    "base64" => {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(content.replace("\r\n", ""))
                            .unwrap()
                    }
                    "quoted-printable" => quoted_printable(content),
                    _ => content.as_bytes().to_vec(),
                };
                (hs, bytes)
            })
            .collect()
    }

    fn quoted_printable(text: &str) -> Vec<u8> {
        let text = text.replace("=\r\n", "");
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'=' && i + 2 < b.len() + 1 {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn settings_are_checked() {
        let problems = |text: &str| {
            let mut p = Vec::new();
            match toml::from_str::<EmailConfig>(text) {
                Ok(c) => c.validate(&ctx(), &mut p),
                Err(e) => p.push(e.to_string()),
            }
            p.join("\n")
        };
        assert_eq!(problems("to = [\"ops@example.org\"]\n"), "");
        let all = problems(
            "to = [\"not an address\", \"ops@example.org\\r\\nBcc: x@example.net\"]\n\
             from = \"nobody\"\nsendmail = \"sendmail\"\nsubject_prefix = \"a\\nb\"\n\
             timeout_ms = 0\nretries = 11\n",
        );
        for want in [
            "to[0] is not an e-mail address",
            "to[1] holds a control character: ops@example.org\\x0d\\x0aBcc",
            "from is not an e-mail address",
            "sendmail must be an absolute path, got sendmail",
            "subject_prefix must be at most 100 characters without control characters",
            "timeout_ms must be between 1 and 600000, got 0",
            "retries must be at most 10, got 11",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert!(problems("to = []\n").contains("to must name at least one address"));
        assert!(
            problems("to = [\"a@example.org\"]\nsmtp = \"x\"\n").contains("unknown field `smtp`")
        );
        // Defaults.
        let c: EmailConfig = toml::from_str("to = [\"ops@example.org\"]\n").unwrap();
        assert_eq!(c.sendmail, Path::new("/usr/sbin/sendmail"));
        assert_eq!(c.subject_prefix, "[exim-access]");
        assert!(sender("from", None).unwrap().email.user() == "exim-access");
    }

    #[test]
    fn one_alert_is_a_text_body_and_its_json_attached() {
        let a = alert(
            "alice",
            "account alice held for 15 min after 5 failed logins",
        );
        let m = sink("").message(std::slice::from_ref(&a)).unwrap();
        let (headers, _) = split(&m);
        assert_eq!(header(&headers, "From"), ["oracle@mx.example.org"]);
        assert_eq!(
            header(&headers, "To"),
            ["ops@example.org, \"Mail team\" <team@example.org>"]
        );
        assert_eq!(
            header(&headers, "Subject"),
            ["[exim-access] account alice held for 15 min after 5 failed logins"]
        );
        assert_eq!(header(&headers, "Auto-Submitted"), ["auto-generated"]);
        assert!(header(&headers, "Message-ID")[0].ends_with(".exim-access@mx.example.org>"));
        assert_eq!(header(&headers, "Date").len(), 1);
        assert!(header(&headers, "Content-Type")[0].starts_with("multipart/mixed"));
        let to: Vec<String> = m.envelope().to().iter().map(ToString::to_string).collect();
        assert_eq!(to, ["ops@example.org", "team@example.org"]);

        let parts = parts(&m);
        assert_eq!(parts.len(), 2);
        assert!(header(&parts[0].0, "Content-Type")[0].starts_with("text/plain"));
        let text = String::from_utf8(parts[0].1.clone())
            .unwrap()
            .replace("\r\n", "\n");
        assert!(text.starts_with(&a.describe()), "{text}");
        assert!(text.contains("Account:   alice"), "{text}");
        assert_eq!(header(&parts[1].0, "Content-Type"), ["application/json"]);
        assert_eq!(
            header(&parts[1].0, "Content-Disposition"),
            ["attachment; filename=\"alert.json\""]
        );
        let json: serde_json::Value = serde_json::from_slice(&parts[1].1).unwrap();
        assert_eq!(json, serde_json::to_value(&*a).unwrap());
    }

    #[test]
    fn a_grouped_alert_says_so_in_subject_and_body() {
        let mut a = (*alert("alice", "account alice held")).clone();
        a.group = Some(Group {
            count: 4,
            first: Timestamp::from_second(1_800_000_000).unwrap(),
            last: Timestamp::from_second(1_800_000_120).unwrap(),
        });
        let m = sink("").message(&[Arc::new(a)]).unwrap();
        let (headers, _) = split(&m);
        assert_eq!(
            header(&headers, "Subject"),
            ["[exim-access] account alice held (4 alerts of failed_logins_account in 2 min)"]
        );
        let text = String::from_utf8(parts(&m)[0].1.clone())
            .unwrap()
            .replace("\r\n", "\n");
        assert!(text.contains("Grouped:   4 alerts from"), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&parts(&m)[1].1).unwrap();
        assert_eq!(json["group"]["count"], 4);
    }

    #[test]
    fn a_batch_is_one_message_listing_each_alert_with_a_json_array() {
        let batch = [
            alert("alice", "first alert"),
            alert("bob", "second alert"),
            alert("carol", "third alert"),
        ];
        let m = sink("subject_prefix = \"[mx1]\"").message(&batch).unwrap();
        let (headers, _) = split(&m);
        assert_eq!(
            header(&headers, "Subject"),
            ["[mx1] 3 alerts: first alert (and 2 more)"]
        );
        let parts = parts(&m);
        let text = String::from_utf8(parts[0].1.clone())
            .unwrap()
            .replace("\r\n", "\n");
        for (i, a) in batch.iter().enumerate() {
            assert!(text.contains(&format!("Alert {} of 3", i + 1)), "{text}");
            assert!(text.contains(&a.describe()), "{text}");
        }
        assert!(header(&parts[1].0, "Content-Disposition")[0].contains("alerts.json"));
        let json: serde_json::Value = serde_json::from_slice(&parts[1].1).unwrap();
        let accounts: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["account"].as_str().unwrap())
            .collect();
        assert_eq!(accounts, ["alice", "bob", "carol"]);
    }

    #[test]
    fn an_account_name_cannot_add_a_header() {
        for evil in [
            "evil\r\nBcc: victim@example.net\r\nX-Injected: yes",
            "evil\nBcc: victim@example.net",
            "evil\rBcc: victim@example.net",
            "=?utf-8?q?x?=\r\n\r\nbody",
            "evil\u{85}Bcc: victim@example.net",
        ] {
            let a = alert(evil, &format!("account {evil} held"));
            let m = sink("").message(&[a]).unwrap();
            let (headers, body) = split(&m);
            assert!(header(&headers, "Bcc").is_empty(), "{headers:?}");
            assert!(header(&headers, "X-Injected").is_empty(), "{headers:?}");
            assert_eq!(header(&headers, "Subject").len(), 1, "{headers:?}");
            // The body holds no such line either; the envelope only the configured two.
            assert!(!body.split("\r\n").any(|l| l.starts_with("Bcc:")), "{body}");
            assert_eq!(m.envelope().to().len(), 2);
            let subject = header(&headers, "Subject")[0];
            assert!(!subject.contains('\r') && !subject.contains('\n'));
        }
        // Escaped, still readable.
        assert_eq!(
            subject_line("[x]", "account evil\r\nBcc: v@example.net held"),
            "[x] account evil\\x0d\\x0aBcc: v@example.net held"
        );
    }

    #[test]
    fn long_subjects_are_cut() {
        let long = "ü".repeat(500);
        let s = subject_line("[exim-access]", &long);
        assert_eq!(s.chars().count(), MAX_SUBJECT_CHARS);
        assert!(s.ends_with("..."));
        let a = alert("alice", &long);
        let m = sink("").message(&[a]).unwrap();
        // Non-ASCII is encoded (RFC 2047) and folded, never sent raw.
        let raw = String::from_utf8(m.formatted()).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap();
        assert!(head.is_ascii(), "{head}");
        assert!(head.split("\r\n").all(|l| l.len() <= 998));
    }

    /// A sendmail stand-in: a real script that keeps its arguments and its input.
    fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("sendmail");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[tokio::test]
    async fn sendmail_gets_the_envelope_as_arguments_and_the_message_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let program = script(
            dir.path(),
            &format!("printf '%s\\n' \"$@\" > {d}/args\ncat > {d}/message\nenv > {d}/env"),
        );
        let mut s = sink(&format!("sendmail = \"{}\"", program.display()));
        let batch = [alert("alice", "held")];
        let outcome = s.deliver(&batch).await;
        assert_eq!(
            outcome,
            Outcome {
                delivered: 1,
                failed: 0,
                retried: 0
            }
        );
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert_eq!(
            args,
            "-i\n-f\noracle@mx.example.org\n--\nops@example.org\nteam@example.org\n"
        );
        let message = std::fs::read_to_string(dir.path().join("message")).unwrap();
        assert!(
            message.contains("Subject: [exim-access] held\r\n"),
            "{message}"
        );
        assert!(message.contains("filename=\"alert.json\""), "{message}");
        let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
        assert!(env.contains("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), "{env}");
        assert!(!env.contains("HOME="), "{env}");
    }

    #[tokio::test]
    async fn a_failing_or_hung_sendmail_fails_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let failing = script(dir.path(), "echo 'no such user' >&2\nexit 75");
        let mut s = sink(&format!(
            "sendmail = \"{}\"\nretries = 0",
            failing.display()
        ));
        let batch = [alert("alice", "one"), alert("bob", "two")];
        assert_eq!(
            s.deliver(&batch).await,
            Outcome {
                delivered: 0,
                failed: 2,
                retried: 0
            }
        );
        let sent = s.sendmail.send("test", &s.message(&batch).unwrap()).await;
        assert!(
            sent.result
                .unwrap_err()
                .to_string()
                .contains("no such user"),
            "the first line of stderr is kept"
        );

        let hung = dir.path().join("hung");
        std::fs::write(&hung, "#!/bin/sh\nexec /bin/sleep 30\n").unwrap();
        std::fs::set_permissions(&hung, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut s = sink(&format!(
            "sendmail = \"{}\"\nretries = 0\ntimeout_ms = 200",
            hung.display()
        ));
        let started = std::time::Instant::now();
        assert_eq!(s.deliver(&batch).await.failed, 2);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed at the timeout"
        );
    }

    #[test]
    fn the_preflight_looks_at_the_program() {
        let mut p = Vec::new();
        config("sendmail = \"/nonexistent/sendmail\"").preflight(&ctx(), &mut p);
        assert!(
            p[0].contains("sendmail /nonexistent/sendmail: No such file"),
            "{p:?}"
        );
        let mut p = Vec::new();
        config("sendmail = \"/etc\"").preflight(&ctx(), &mut p);
        assert!(p[0].contains("not a program"), "{p:?}");
    }
}
