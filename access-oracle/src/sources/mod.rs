//! Log sources: turning Exim and Dovecot log lines into [`LogEvent`]s.
//!
//! The live path only sees what Exim asks about; the logs also show deliveries, bounces,
//! rejections, IMAP/POP logins and mailbox access. This module reads them:
//!
//! * [`prefix`] strips the line prefixes the formats share (Exim's own timestamp, syslog,
//!   RFC 3339 syslog, daemontools TAI64N, Dovecot's `log_path` timestamps).
//! * [`exim_log`] parses Exim mainlog and paniclog lines, including the structured
//!   `exim-access: {...}` lines the shipped configuration may write.
//! * [`dovecot_log`] parses Dovecot login, auth, mail-process and `mail_log` lines.
//! * [`config`] is `[[sources]]`, the files the daemon follows (`crate::server::follow`);
//!   `access-oracle parse`, `replay` and `ingest` read files through [`reader`]
//!   (`crate::commands`).
//!
//! Every parser is a pure function of the line bytes and a [`LineContext`] (file, offset,
//! time zone and a reference time for years that syslog leaves out): no clock, no I/O.
//! A line is an event (or several), [`Parsed::Irrelevant`] (known, nothing to report),
//! [`Parsed::Unrecognised`], or [`Parsed::DeadLetter`]: it looks relevant (it mentions an
//! authentication failure, a login, an arrival ...) but does not parse, so that a changed
//! log format shows up as dead letters instead of silently missed attacks.

pub mod config;
pub mod dovecot_log;
pub mod exim_log;
pub mod prefix;
pub mod reader;
pub mod redact;
pub mod tail;

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;

pub use compact_str::CompactString;
pub use config::SourceConfig;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

pub use crate::protocol::Outcome;

/// One thing that happened, as a log line tells it; every field but `time`, `kind`,
/// `file` and `offset` is optional and left out of the JSON when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogEvent {
    /// When it happened.
    pub time: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// For `auth`: whether the credentials were accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
    /// The account (authenticated id, login name, mailbox owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<CompactString>,
    /// The client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// The client's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The server address the client connected to (Exim `I=`, Dovecot `lip=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<IpAddr>,
    /// The server port the client connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// The service the event belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// The SASL mechanism (`PLAIN`, `LOGIN`, ...), as logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mech: Option<CompactString>,
    /// Exim's authenticator name (`plain_server`, `dovecot_plain`, ...), as logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticator: Option<CompactString>,
    /// Dovecot's passdb driver that judged the password (`passwd-file`, `pam`, `sql`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passdb: Option<CompactString>,
    /// The name the client gave in HELO / EHLO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub helo: Option<CompactString>,
    /// The host name Exim verified for the client (or for a delivery's remote host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_name: Option<CompactString>,
    /// For deliveries and deferrals: the address of the remote host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ip: Option<IpAddr>,
    /// Exim's message id (`1xXAPn-0007UM-2H`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgid: Option<CompactString>,
    /// The message's `Message-ID` header (Exim `id=`, Dovecot `msgid=`), without `<>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<CompactString>,
    /// Dovecot's session id, shared by the login, the auth lines and the logout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<CompactString>,
    /// The process id (Exim `+pid`, syslog `[pid]`, Dovecot `mpid=` / mail process).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The envelope sender (`<>` for bounces is kept as an empty string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<CompactString>,
    /// Recipients: the arrival's `for` list, or the one address of a delivery,
    /// deferral, bounce or rejected RCPT.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<CompactString>,
    /// How many recipients the message had, when the line says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcpt_count: Option<u32>,
    /// The message size in bytes (Exim `S=`, Dovecot `size=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Exim's local user (`U=`) for locally submitted messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_user: Option<CompactString>,
    /// Exim's router (`R=`) for deliveries, deferrals and bounces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router: Option<CompactString>,
    /// Exim's transport (`T=`) for deliveries and deferrals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<CompactString>,
    /// Whether the connection used TLS, when the line says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// IMAP bytes received from the client (`in=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Bytes sent to the client (IMAP `out=`, POP3 `top` + `retr` bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Messages fetched in the session (IMAP `body_count=`, POP3 `retr=` count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched: Option<u64>,
    /// Messages deleted in the session (IMAP `deleted=`, POP3 `del=` count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    /// Messages expunged in the session (IMAP `expunged=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expunged: Option<u64>,
    /// The mailbox acted on (`box=`, or the new name of a renamed mailbox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<CompactString>,
    /// The source mailbox of a copy or a rename.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_mailbox: Option<CompactString>,
    /// The message's IMAP UID (`uid=`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// For `mailbox_action` and `admin_action`: what was done (`expunge`, `frozen`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<CompactString>,
    /// Who acted with privileges: Exim's `... by NAME`, Dovecot's master user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<CompactString>,
    /// For Dovecot's login summary: how many authentication attempts it sums up (the
    /// auth process may already have logged each one; see [`dovecot_log`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// For rejections and authentication failures: the refusal was temporary (4xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary: Option<bool>,
    /// Why: the rejection, deferral, bounce or failure text, as logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CompactString>,
    /// The file the line came from.
    pub file: Arc<str>,
    /// The byte offset of the line's start in that file (in the decompressed stream for
    /// `.gz` files).
    pub offset: u64,
}

impl LogEvent {
    /// An event of `kind` at `time` from the line at `ctx`, every other field unknown.
    pub fn new(kind: EventKind, time: Timestamp, ctx: &LineContext) -> LogEvent {
        LogEvent {
            time,
            kind,
            result: None,
            user: None,
            ip: None,
            port: None,
            local_ip: None,
            local_port: None,
            protocol: None,
            mech: None,
            authenticator: None,
            passdb: None,
            helo: None,
            host_name: None,
            remote_ip: None,
            msgid: None,
            message_id: None,
            session: None,
            pid: None,
            sender: None,
            recipients: Vec::new(),
            rcpt_count: None,
            size: None,
            local_user: None,
            router: None,
            transport: None,
            tls: None,
            bytes_in: None,
            bytes_out: None,
            fetched: None,
            deleted: None,
            expunged: None,
            mailbox: None,
            from_mailbox: None,
            uid: None,
            action: None,
            admin: None,
            attempts: None,
            temporary: None,
            reason: None,
            file: ctx.file.clone(),
            offset: ctx.offset,
        }
    }
}

/// What a [`LogEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An authentication attempt, successful or not (`result`).
    Auth,
    /// A message accepted by Exim (`<=`).
    Arrival,
    /// A delivery (`=>`, `->`, and `*>` when delivery was suppressed).
    Delivery,
    /// A temporary delivery failure (`==`).
    Deferral,
    /// A permanent delivery failure (`**`).
    Bounce,
    /// Exim finished with a message (`Completed`).
    Completed,
    /// A refused command: MAIL, RCPT, DATA, a connection, a protocol error.
    Rejection,
    /// A client connected.
    Connection,
    /// A client went away (or was dropped) without a logout to report.
    Disconnection,
    /// An IMAP / POP3 session ended, with its counters.
    Logout,
    /// Something done to a mailbox or a message in it (Dovecot `mail_log`).
    MailboxAction,
    /// An administrator acted (Exim `frozen by`, `removed by`; Dovecot master user).
    AdminAction,
    /// A line of Exim's paniclog.
    Panic,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 13] = [
        EventKind::Auth,
        EventKind::Arrival,
        EventKind::Delivery,
        EventKind::Deferral,
        EventKind::Bounce,
        EventKind::Completed,
        EventKind::Rejection,
        EventKind::Connection,
        EventKind::Disconnection,
        EventKind::Logout,
        EventKind::MailboxAction,
        EventKind::AdminAction,
        EventKind::Panic,
    ];

    /// The kind as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Auth => "auth",
            EventKind::Arrival => "arrival",
            EventKind::Delivery => "delivery",
            EventKind::Deferral => "deferral",
            EventKind::Bounce => "bounce",
            EventKind::Completed => "completed",
            EventKind::Rejection => "rejection",
            EventKind::Connection => "connection",
            EventKind::Disconnection => "disconnection",
            EventKind::Logout => "logout",
            EventKind::MailboxAction => "mailbox_action",
            EventKind::AdminAction => "admin_action",
            EventKind::Panic => "panic",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// SMTP (Exim, any port).
    Smtp,
    /// Dovecot's submission service.
    Submission,
    /// IMAP.
    Imap,
    /// POP3.
    Pop3,
    /// ManageSieve.
    #[serde(alias = "managesieve")]
    Sieve,
    /// LMTP.
    Lmtp,
    /// A message submitted locally (Exim `P=local`).
    Local,
}

impl Protocol {
    /// The protocol as written in events and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Sieve => "sieve",
            Protocol::Lmtp => "lmtp",
            Protocol::Local => "local",
        }
    }

    /// The protocol of a Dovecot service name (`imap`, `pop3-login`, ...).
    pub fn from_service(service: &[u8]) -> Option<Protocol> {
        let base = service.strip_suffix(b"-login").unwrap_or(service);
        Some(match base {
            b"imap" => Protocol::Imap,
            b"pop3" => Protocol::Pop3,
            b"submission" => Protocol::Submission,
            b"managesieve" | b"sieve" => Protocol::Sieve,
            b"lmtp" => Protocol::Lmtp,
            b"smtp" => Protocol::Smtp,
            _ => return None,
        })
    }
}

/// The outcome of parsing one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The line reports one event.
    Event(Box<LogEvent>),
    /// The line reports several events (an arrival with its `A=` authentication).
    Events(Vec<LogEvent>),
    /// A known line with nothing to report (queue runs, daemon start, debug lines ...).
    Irrelevant,
    /// A line of no known shape.
    Unrecognised,
    /// A line that looks relevant but could not be parsed; the reason says why.
    DeadLetter(&'static str),
}

impl Parsed {
    /// The events, if any.
    pub fn into_events(self) -> Vec<LogEvent> {
        match self {
            Parsed::Event(e) => vec![*e],
            Parsed::Events(v) => v,
            _ => Vec::new(),
        }
    }

    /// The events, borrowed.
    pub fn events(&self) -> &[LogEvent] {
        match self {
            Parsed::Event(e) => std::slice::from_ref(e),
            Parsed::Events(v) => v,
            _ => &[],
        }
    }
}

impl From<LogEvent> for Parsed {
    fn from(e: LogEvent) -> Parsed {
        Parsed::Event(Box::new(e))
    }
}

impl From<Box<LogEvent>> for Parsed {
    fn from(e: Box<LogEvent>) -> Parsed {
        Parsed::Event(e)
    }
}

/// Which parser a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Exim's mainlog or paniclog.
    Exim,
    /// Dovecot's log.
    Dovecot,
    /// Decide per line (syslog program name first, then the line's shape).
    #[default]
    Auto,
}

/// Where a line comes from and how to read its times.
#[derive(Debug, Clone)]
pub struct LineContext {
    /// The file name reported in events.
    pub file: Arc<str>,
    /// The byte offset of the line in the file.
    pub offset: u64,
    /// The time zone of timestamps written without an offset.
    pub tz: TimeZone,
    /// A time not long after the line was written (the file's modification time, or
    /// now): supplies the year syslog leaves out.
    pub reference: Timestamp,
    /// The line is from Exim's paniclog: every line is a `panic` event.
    pub paniclog: bool,
}

impl LineContext {
    /// A context for `file`, guessing `paniclog` from its name.
    pub fn new(file: &str, tz: TimeZone, reference: Timestamp) -> LineContext {
        LineContext {
            paniclog: file
                .rsplit('/')
                .next()
                .is_some_and(|name| name.contains("paniclog")),
            file: Arc::from(file),
            offset: 0,
            tz,
            reference,
        }
    }
}

/// Parses one log line (without its newline) in `format`.
pub fn parse_line(format: Format, line: &[u8], ctx: &LineContext) -> Parsed {
    parse_line_with(format, line, ctx, None)
}

/// [`parse_line`] for the lines of one file read in order: `memo` (kept beside `ctx`, see
/// [`prefix::TimeMemo`]) lets a line with the previous line's timestamp skip reading and
/// resolving it again.
pub fn parse_line_memo(
    format: Format,
    line: &[u8],
    ctx: &LineContext,
    memo: &prefix::TimeMemo,
) -> Parsed {
    parse_line_with(format, line, ctx, Some(memo))
}

fn parse_line_with(
    format: Format,
    line: &[u8],
    ctx: &LineContext,
    memo: Option<&prefix::TimeMemo>,
) -> Parsed {
    let line = trim_line_end(line);
    if line.is_empty() {
        return Parsed::Irrelevant;
    }
    let pre = match memo {
        Some(memo) => prefix::strip_memo(line, memo),
        None => prefix::strip(line),
    };
    let parsed = match format {
        Format::Exim => exim_log::parse(&pre, ctx),
        Format::Dovecot => dovecot_log::parse(&pre, ctx),
        Format::Auto => match pre.program.map(program_format) {
            Some(Some(Format::Exim)) => exim_log::parse(&pre, ctx),
            Some(Some(Format::Dovecot)) => dovecot_log::parse(&pre, ctx),
            _ => match exim_log::parse(&pre, ctx) {
                Parsed::Unrecognised => dovecot_log::parse(&pre, ctx),
                other => other,
            },
        },
    };
    match parsed {
        Parsed::Unrecognised if looks_relevant(line) => {
            Parsed::DeadLetter("unrecognised line that mentions authentication or mail")
        }
        Parsed::Event(mut e) => {
            redact_reason(&mut e);
            Parsed::Event(e)
        }
        Parsed::Events(mut v) => {
            v.iter_mut().for_each(redact_reason);
            Parsed::Events(v)
        }
        other => other,
    }
}

/// Cuts a password out of an event's text (a client's `AUTH PLAIN <base64>` quoted in a
/// protocol error, Dovecot's `(given password: ...)`): events are printed by `parse`,
/// kept in alerts and the audit trail.
fn redact_reason(e: &mut LogEvent) {
    if let Some(reason) = &e.reason
        && let std::borrow::Cow::Owned(cut) = redact::redact(reason.as_bytes())
    {
        e.reason = Some(CompactString::from(String::from_utf8_lossy(&cut)));
    }
}

/// The format a syslog program name belongs to.
fn program_format(program: &[u8]) -> Option<Format> {
    match program {
        b"exim" | b"exim4" => Some(Format::Exim),
        p if p.starts_with(b"dovecot") => Some(Format::Dovecot),
        _ => None,
    }
}

/// Drops a trailing `\n` / `\r\n`.
fn trim_line_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\n' | b'\r'] = line {
        line = rest;
    }
    line
}

/// Phrases that make an unparsed line worth a dead letter: a missed one could be a
/// missed attack.
const RELEVANT: &[&[u8]] = &[
    b"authenticator failed",
    b"auth failed",
    b"Login:",
    b"Password mismatch",
    b"password mismatch",
    b"unknown user",
    b"authentication failure",
    b"pam_authenticate",
    b"rejected RCPT",
    b"rejected MAIL",
    b" <= ",
    b"Logged out",
];

/// Whether an unparsed line mentions something the oracle must not miss.
pub fn looks_relevant(line: &[u8]) -> bool {
    RELEVANT.iter().any(|needle| find(line, needle).is_some())
}

/// The first position of `needle` in `hay` (a small, allocation-free substring search).
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut start = 0;
    while start + needle.len() <= hay.len() {
        let i = start
            + hay[start..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        // A byte loop: needles are short, a memcmp call costs more than it saves.
        if hay[i + 1..i + needle.len()]
            .iter()
            .zip(rest)
            .all(|(a, b)| a == b)
        {
            return Some(i);
        }
        start = i + 1;
    }
    None
}

/// A line's bytes, validated as UTF-8 at most once (when the first field is kept): the
/// fields kept are then sliced out of it as text without validating each one again.
pub(crate) struct LineText<'l> {
    bytes: &'l [u8],
    utf8: OnceCell<Option<&'l str>>,
}

impl<'l> LineText<'l> {
    /// The text of fields of `bytes`.
    pub(crate) fn new(bytes: &'l [u8]) -> LineText<'l> {
        LineText {
            bytes,
            utf8: OnceCell::new(),
        }
    }

    /// Lossy UTF-8 of `field`, owned: a slice of the validated line when `field` lies in
    /// it and the line is valid UTF-8, else validated (or replaced) on its own.
    pub(crate) fn text(&self, field: &[u8]) -> CompactString {
        let line = *self
            .utf8
            .get_or_init(|| std::str::from_utf8(self.bytes).ok());
        if let Some(line) = line {
            // Where `field` starts in the line, if it is a slice of it: addresses compared
            // as numbers, no pointer is dereferenced.
            let start = (field.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
            if start <= line.len() && field.len() <= line.len() - start {
                if let Some(s) = line.get(start..start + field.len()) {
                    return CompactString::from(s);
                }
            }
        }
        text(field)
    }
}

/// Lossy UTF-8 of a log field, owned (inline, without an allocation, up to 24 bytes).
pub(crate) fn text(bytes: &[u8]) -> CompactString {
    match std::str::from_utf8(bytes) {
        Ok(s) => CompactString::from(s),
        Err(_) => CompactString::from_utf8_lossy(bytes),
    }
}

/// An unsigned decimal number (at most 19 digits), or `None`.
pub(crate) fn number<T: TryFrom<u64>>(bytes: &[u8]) -> Option<T> {
    if bytes.is_empty() || bytes.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    T::try_from(n).ok()
}

/// An IP address as logs write it (IPv4-mapped IPv6 normalised to IPv4), or `None`.
///
/// Exactly what `str::parse::<IpAddr>` accepts (and `None` for the rest); the common
/// shapes are read without going through `str` (this is on the hot path of every Exim
/// line), anything unusual is left to std.
pub(crate) fn ip(bytes: &[u8]) -> Option<IpAddr> {
    if let Some(v4) = ipv4(bytes) {
        return Some(IpAddr::V4(v4));
    }
    if !bytes.contains(&b':') {
        return None;
    }
    let v6 = match ipv6(bytes) {
        Some(v6) => v6,
        None => match std::str::from_utf8(bytes).ok()?.parse::<IpAddr>().ok()? {
            IpAddr::V6(v6) => v6,
            v4 => return Some(v4),
        },
    };
    Some(crate::net::canonical_ip(IpAddr::V6(v6)))
}

/// A dotted-quad IPv4 address in one pass; like std, it refuses leading zeros.
fn ipv4(bytes: &[u8]) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    let (mut value, mut digits) = (0u32, 0);
    for &b in bytes {
        match b {
            b'0'..=b'9' => {
                // A fourth digit, or a digit after a leading zero.
                if digits == 3 || (digits == 1 && value == 0) {
                    return None;
                }
                value = value * 10 + u32::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && n < 3 => {
                octets[n] = u8::try_from(value).ok()?;
                n += 1;
                (value, digits) = (0, 0);
            }
            _ => return None,
        }
    }
    if n != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(value).ok()?;
    Some(std::net::Ipv4Addr::from(octets))
}

/// The plain shapes of an IPv6 address: 8 groups of 1-4 hex digits, or fewer around
/// one `::` standing for at least one zero group. `None` for anything else (an embedded
/// IPv4 address, a malformed one), which [`ip`] leaves to std.
fn ipv6(bytes: &[u8]) -> Option<std::net::Ipv6Addr> {
    let mut groups = [0u16; 8];
    let mut n = 0;
    // Where `::` was, as a number of groups before it.
    let mut gap = None;
    let mut i = 0;
    if bytes.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    }
    while i < bytes.len() {
        let start = i;
        let mut value = 0u16;
        while i < bytes.len() && i - start < 5 {
            let d = match bytes[i] {
                b @ b'0'..=b'9' => b - b'0',
                b @ b'a'..=b'f' => b - b'a' + 10,
                b @ b'A'..=b'F' => b - b'A' + 10,
                _ => break,
            };
            value = (value << 4) | u16::from(d);
            i += 1;
        }
        if i == start || i - start > 4 || n == 8 {
            return None;
        }
        groups[n] = value;
        n += 1;
        if i == bytes.len() {
            break;
        }
        // After a group: `:` and another group, or `::` (once).
        if bytes[i] != b':' {
            return None;
        }
        i += 1;
        if bytes.get(i) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(n);
            i += 1;
            if i == bytes.len() {
                break;
            }
        } else if i == bytes.len() {
            return None;
        }
    }
    match gap {
        None if n == 8 => {}
        Some(at) if n <= 7 => {
            let tail = n - at;
            groups.copy_within(at..n, 8 - tail);
            groups[at..8 - tail].fill(0);
        }
        _ => return None,
    }
    Some(std::net::Ipv6Addr::from(groups))
}

/// Appends dead letters to a file, one per line: `reason<TAB>file:offset<TAB>line`.
#[derive(Debug)]
pub struct DeadLetterWriter<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> DeadLetterWriter<W> {
    /// A writer appending to `out`.
    pub fn new(out: W) -> DeadLetterWriter<W> {
        DeadLetterWriter {
            out: io::BufWriter::new(out),
        }
    }

    /// Writes one dead letter, with any password in it cut out ([`redact::redact`]).
    pub fn write(&mut self, reason: &str, ctx: &LineContext, line: &[u8]) -> io::Result<()> {
        write!(self.out, "{reason}\t{}:{}\t", ctx.file, ctx.offset)?;
        self.out.write_all(&redact::redact(trim_line_end(line)))?;
        self.out.write_all(b"\n")
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Counts of what the parsers made of a stream of lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParseStats {
    /// Lines read.
    pub lines: u64,
    /// Events by kind.
    pub events: BTreeMap<EventKind, u64>,
    /// Successful authentications.
    pub auth_ok: u64,
    /// Failed authentications.
    pub auth_fail: u64,
    /// Known lines with nothing to report.
    pub irrelevant: u64,
    /// Lines of no known shape.
    pub unrecognised: u64,
    /// Lines that looked relevant but did not parse, by reason.
    pub dead_letters: BTreeMap<&'static str, u64>,
}

impl ParseStats {
    /// Counts one parsed line.
    pub fn record(&mut self, parsed: &Parsed) {
        self.lines += 1;
        match parsed {
            Parsed::Irrelevant => self.irrelevant += 1,
            Parsed::Unrecognised => self.unrecognised += 1,
            Parsed::DeadLetter(reason) => *self.dead_letters.entry(reason).or_default() += 1,
            Parsed::Event(_) | Parsed::Events(_) => {
                for e in parsed.events() {
                    // `get_mut` first: no entry handle for the common case, a kind seen before.
                    match self.events.get_mut(&e.kind) {
                        Some(n) => *n += 1,
                        None => {
                            self.events.insert(e.kind, 1);
                        }
                    }
                    match (e.kind, e.result) {
                        (EventKind::Auth, Some(Outcome::Ok)) => self.auth_ok += 1,
                        (EventKind::Auth, Some(Outcome::Fail)) => self.auth_fail += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    /// How many lines were dead-lettered.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_letters.values().sum()
    }

    /// Adds another set of counts to this one.
    pub fn merge(&mut self, other: &ParseStats) {
        self.lines += other.lines;
        for (k, v) in &other.events {
            *self.events.entry(*k).or_default() += v;
        }
        self.auth_ok += other.auth_ok;
        self.auth_fail += other.auth_fail;
        self.irrelevant += other.irrelevant;
        self.unrecognised += other.unrecognised;
        for (k, v) in &other.dead_letters {
            *self.dead_letters.entry(k).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ctx() -> LineContext {
        LineContext::new(
            "test.log",
            TimeZone::UTC,
            "2026-12-01T00:00:00Z".parse().unwrap(),
        )
    }

    #[test]
    fn dead_letters_are_one_line_each() {
        let mut out = Vec::new();
        let mut w = DeadLetterWriter::new(&mut out);
        let mut c = ctx();
        c.offset = 42;
        w.write("why", &c, b"the line\r\n").unwrap();
        w.flush().unwrap();
        drop(w);
        assert_eq!(out, b"why\ttest.log:42\tthe line\n");
    }

    #[test]
    fn addresses_and_numbers() {
        let v4 = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(ip(b"192.0.2.1"), v4("192.0.2.1"));
        assert_eq!(ip(b"::ffff:192.0.2.1"), v4("192.0.2.1"));
        assert_eq!(ip(b"2001:db8::1"), v4("2001:db8::1"));
        for bad in [
            "",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "1..2.3",
            "a.b.c.d",
            ":::",
        ] {
            assert_eq!(ip(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(number::<u16>(b"65535"), Some(65535));
        assert_eq!(number::<u16>(b"65536"), None);
        assert_eq!(number::<u64>(b"99999999999999999999"), None);
        assert_eq!(number::<u32>(b"1x"), None);
    }

    /// What std makes of `s`, normalised as [`ip`] does.
    fn std_ip(s: &str) -> Option<IpAddr> {
        s.parse::<IpAddr>().ok().map(crate::net::canonical_ip)
    }

    #[test]
    fn addresses_read_as_std_reads_them() {
        for s in [
            "::",
            "::1",
            "1::",
            "1::2",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::8",
            "1::2:3:4:5:6:7",
            "1::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            ":::",
            "1:::2",
            ":1",
            "1:",
            "1::2::3",
            "12345::",
            "0:0::0",
            "00000::",
            "ABCD:ef01::",
            "fe80::1%eth0",
            "1.2.3.4",
            "1.2.3.04",
            "0.0.0.0",
            "255.255.255.255",
            "1.2.3.4.",
            ".1.2.3",
            "1.2.3",
            "1.2.3.4:25",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "::1.2.3.4",
            "1::1.2.3.4",
            "",
            ":",
            "g::",
        ] {
            assert_eq!(ip(s.as_bytes()), std_ip(s), "{s:?}");
        }
        // The plain shapes take the fast path.
        assert!(ipv6(b"2001:db8::25").is_some() && ipv6(b"::").is_some());
    }

    proptest::proptest! {
        #[test]
        fn random_addresses_read_as_std_reads_them(s in "[0-9a-fA-F:.]{0,24}") {
            proptest::prop_assert_eq!(ip(s.as_bytes()), std_ip(&s), "{:?}", s);
        }

        #[test]
        fn every_ipv6_address_reads_back(groups in proptest::array::uniform8(proptest::prelude::any::<u16>()), upper: bool) {
            let s = std::net::Ipv6Addr::from(groups).to_string();
            let s = if upper { s.to_uppercase() } else { s };
            proptest::prop_assert_eq!(ip(s.as_bytes()), std_ip(&s), "{:?}", s);
        }
    }

    #[test]
    fn find_finds_substrings() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(find(b"aaab", b"ab"), Some(2));
        assert_eq!(find(b"x", b"x"), Some(0));
    }

    #[test]
    fn auto_picks_the_parser_per_line() {
        let exim = b"2026-11-28 04:52:00 plain_server authenticator failed for (brute) [127.0.0.1]: 535 Incorrect authentication data (set_id=alice)";
        let dovecot = b"Nov 28 04:50:50 auth: Info: passwd-file(alice,127.0.0.1,<NFy0605hqpB/AAAB>): Password mismatch";
        for line in [&exim[..], &dovecot[..]] {
            let events = parse_line(Format::Auto, line, &ctx()).into_events();
            assert_eq!(events.len(), 1, "{}", String::from_utf8_lossy(line));
            assert_eq!(events[0].result, Some(Outcome::Fail));
            assert_eq!(events[0].user.as_deref(), Some("alice"));
        }
    }

    #[test]
    fn relevant_garbage_is_dead_lettered() {
        let line = b"2026-11-28 04:52:00 something authenticator failed in a new way";
        assert!(matches!(
            parse_line(Format::Auto, line, &ctx()),
            Parsed::DeadLetter(_)
        ));
        assert_eq!(
            parse_line(Format::Auto, b"hello world", &ctx()),
            Parsed::Unrecognised
        );
    }

    #[test]
    fn stats_count_kinds_and_outcomes() {
        let mut stats = ParseStats::default();
        let line = b"2026-11-28 04:51:59 1xXAPn-0007UM-2H <= alice@example.test H=(client.example.test) [127.0.0.1] P=esmtpa A=plain_server:alice S=500";
        stats.record(&parse_line(Format::Exim, line, &ctx()));
        stats.record(&Parsed::Unrecognised);
        assert_eq!(stats.lines, 2);
        assert_eq!(stats.auth_ok, 1);
        assert_eq!(stats.events[&EventKind::Arrival], 1);
        assert_eq!(stats.unrecognised, 1);
    }
}
