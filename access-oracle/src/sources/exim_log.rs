//! Exim mainlog and paniclog lines.
//!
//! After the [`prefix`](super::prefix) (Exim's own timestamp with optional `log_timezone`
//! offset and `+pid`, or syslog), a line is either about a message (it starts with an
//! Exim message id, `1xXAPn-0007UM-2H`, or the 4.97+ `1rAbCd-000ABCdEfGh-1234`) or
//! about a connection:
//!
//! | line | event |
//! |---|---|
//! | `ID <= sender H=... P=... A=auth:id S=... id=... for a b` | `arrival`, and an `auth` ok when `A=` names an id |
//! | `ID => addr <orig> R=... T=... H=...`, `->`, `*>` (suppressed) | `delivery` |
//! | `ID == addr R=... T=... defer (111): text` | `deferral` |
//! | `ID ** addr R=...: text` | `bounce` |
//! | `ID Completed` | `completed` |
//! | `ID frozen by root`, `unfrozen`, `thawed`, `removed`, `cancelled`, ... `by NAME` | `admin_action` |
//! | `NAME authenticator failed for (helo) [ip]:port: 535 ... (set_id=user)` | `auth` fail (`temporary` for 435) |
//! | `H=... F=<s> [A=auth:id] rejected RCPT <r>: why`, `temporarily rejected`, `rejected MAIL`, `rejected after DATA`, `sender verify fail` | `rejection` |
//! | `SMTP connection from ... (TCP/IP connection count = N)` | `connection` |
//! | `SMTP connection from ... closed by QUIT` / `lost` / `closed by DROP in ACL`, `no MAIL in SMTP connection from ...`, timeouts | `disconnection` |
//! | `SMTP protocol error in ...`, `SMTP syntax error in ...`, synchronization errors, `SMTP call from ... dropped`, `Connection from ... refused` | `rejection` (`action` = `protocol`) |
//! | `exim-access: {...}` | the event the JSON object describes (below) |
//! | any line of a paniclog | `panic` |
//!
//! A successful SMTP AUTH has no log line of its own in Exim 4.96: it shows as
//! `A=<authenticator>:<id>` on the `<=` (and rejection) lines. So each `<=` line with an
//! `A=` id also yields an `auth` event with result `ok`: one per message, not one per
//! AUTH command; a session that sends three messages after one AUTH gives three (they
//! share `pid` and `port` when `+pid` / `+incoming_port` are logged). Rejection lines
//! with `A=` carry the `user` but yield no `auth` event. A configuration that also
//! writes a structured `auth` line for a successful AUTH (below) reports it twice; such
//! snippets should log failures only, or consumers must deduplicate (same `pid`).
//!
//! Debian's default `log_selector` (Exim's defaults) and richer ones (`+pid`,
//! `+incoming_port`, `+incoming_interface`, `+smtp_connection`, `+received_recipients`,
//! `+sender_on_delivery`, `+subject`, `+deliver_time`, ...) are all read; unknown
//! `key=value` fields are skipped. Subjects (`T="..."` on `<=` lines) are never kept.
//!
//! # Structured lines
//!
//! The shipped configuration may write one JSON object per event with `logwrite`:
//!
//! ```text
//! 2026-11-28 04:53:08 [31493] exim-access: {"v":1,"event":"auth","result":"ok","user":"alice","ip":"127.0.0.1","port":52116,"authenticator":"plain_server","helo":"client.example.test"}
//! 2026-11-28 04:53:08 [31493] 1xXAQu-0008Bx-1S exim-access: {"v":1,"event":"arrival","user":"alice","ip":"127.0.0.1","rcpts":4,"size":309}
//! ```
//!
//! The message after the prefix (and an optional message id, which Exim adds in a
//! message's context) is `exim-access: ` and one JSON object on one line:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `v` | number, required | format version, `1` |
//! | `event` | string, required | an event kind (`auth`, `arrival`, `rejection`, ...) |
//! | `result` | `"ok"` / `"fail"` | required for `auth` |
//! | `user`, `helo`, `host_name`, `sender`, `authenticator`, `mech`, `msgid`, `message_id`, `session`, `reason`, `action`, `admin`, `mailbox` | string | as in the event |
//! | `ip`, `local_ip` | string | an address; empty means none |
//! | `port`, `local_port` | number | `0` means none |
//! | `protocol` | string | `smtp`, `submission`, ... |
//! | `rcpt` | string | one recipient; `recipients`: an array of them |
//! | `rcpts` | number | recipient count |
//! | `size` | number | message size |
//! | `tls`, `temporary` | boolean | |
//!
//! Unknown keys are ignored (newer snippets may add fields); a missing or wrong `v`,
//! an unknown `event`, a value of the wrong type or a line that is not one JSON object
//! is a dead letter. Strings must be JSON-escaped: in Exim 4.96,
//! `${sg{$value}{([\\\\"])}{\\\\\$1}}` escapes backslashes and quotes.
//!
//! Parsing is byte-level and allocation-free until a line turns out to yield an event.

use std::net::IpAddr;

use serde::Deserialize;

use super::prefix::Prefix;
use super::{
    CompactString, EventKind, LineContext, LineText, LogEvent, Outcome, Parsed, Protocol, find, ip,
    number,
};

/// The longest paniclog text kept in an event, in bytes.
const MAX_PANIC_TEXT: usize = 1000;

/// Parses one Exim log line (its prefix already read).
pub fn parse(pre: &Prefix<'_>, ctx: &LineContext) -> Parsed {
    let rest = pre.rest;
    if rest.is_empty() || rest[0] == b' ' || rest[0] == b'\t' {
        // Continuation lines of a multi-line entry (they have no timestamp).
        return Parsed::Irrelevant;
    }
    if let Some((first, fragment)) = syslog_piece(rest) {
        // Exim splits long lines for syslog into `[1/3] `, `[2/3] `, `[3\3] ` pieces: the
        // first holds the line's start (the fields that matter), the rest are dropped.
        if !first {
            return Parsed::Irrelevant;
        }
        let mut inner = match pre.memo {
            Some(memo) => super::prefix::strip_memo(fragment, memo),
            None => super::prefix::strip(fragment),
        };
        if inner.stamp == super::prefix::Stamp::None {
            inner.stamp = pre.stamp;
        }
        inner.pid = inner.pid.or(pre.pid);
        return parse_message(&inner, ctx);
    }
    parse_message(pre, ctx)
}

/// `[i/n] ` or `[i\n] ` at the start of a syslog message: (is it the first, the rest).
fn syslog_piece(rest: &[u8]) -> Option<(bool, &[u8])> {
    let inner = rest.strip_prefix(b"[")?;
    let close = inner.iter().take(12).position(|&b| b == b']')?;
    let label = &inner[..close];
    let sep = label.iter().position(|&b| b == b'/' || b == b'\\')?;
    let i: u32 = number(&label[..sep])?;
    let _n: u32 = number(&label[sep + 1..])?;
    let fragment = inner[close + 1..].strip_prefix(b" ")?;
    Some((i == 1, fragment))
}

/// Parses one Exim log message (not a syslog piece).
fn parse_message(pre: &Prefix<'_>, ctx: &LineContext) -> Parsed {
    let rest = pre.rest;
    if rest.is_empty() || rest[0] == b' ' || rest[0] == b'\t' {
        return Parsed::Irrelevant;
    }
    let Some(time) = pre.time(ctx) else {
        return Parsed::Unrecognised;
    };
    let line = Line {
        time,
        pid: pre.pid,
        ctx,
        text: LineText::new(rest),
    };
    let (msgid, body) = match message_id(rest) {
        Some(len) => (Some(&rest[..len]), &rest[len + 1..]),
        None => (None, rest),
    };
    if ctx.paniclog {
        return line.panic(msgid, body);
    }
    if let Some(json) = body.strip_prefix(b"exim-access: ") {
        return line.json(msgid, json);
    }
    match msgid {
        Some(id) => line.message(id, body),
        None => line.connection(body),
    }
}

/// The length of the Exim message id at the start of `rest`, if it is followed by a
/// space: `XXXXXX-YYYYYY-ZZ` (up to 4.96) or `XXXXXX-YYYYYYYYYYY-ZZZZ` (4.97+).
fn message_id(rest: &[u8]) -> Option<usize> {
    let alnum = |s: &[u8]| s.iter().all(u8::is_ascii_alphanumeric);
    for (b, c) in [(6usize, 2usize), (11, 4)] {
        let len = 6 + 1 + b + 1 + c;
        if rest.len() > len
            && rest[len] == b' '
            && rest[6] == b'-'
            && rest[7 + b] == b'-'
            && alnum(&rest[..6])
            && alnum(&rest[7..7 + b])
            && alnum(&rest[8 + b..len])
        {
            return Some(len);
        }
    }
    None
}

/// A client or remote host as Exim writes it: `name (helo) [ip]:port`, each part but
/// the address optional.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Host<'a> {
    name: Option<&'a [u8]>,
    helo: Option<&'a [u8]>,
    ip: Option<IpAddr>,
    port: Option<u16>,
}

/// Reads a host at the start of `s`; returns it and the bytes consumed. The address in
/// brackets is required; a `:` right after it that is not a port is left unconsumed.
fn host(s: &[u8]) -> Option<(Host<'_>, usize)> {
    let mut h = Host::default();
    let mut i = 0;
    loop {
        match s.get(i)? {
            b'[' => break,
            b'(' => {
                // The HELO name: up to the `)` that ends a token.
                let close = memchr::memchr_iter(b')', &s[i + 1..])
                    .map(|k| i + 1 + k)
                    .find(|&k| matches!(s.get(k + 1), None | Some(b' ')))?;
                h.helo = Some(&s[i + 1..close]);
                i = close + 1;
            }
            b' ' => i += 1,
            _ if h.name.is_none() && h.helo.is_none() => {
                let end = memchr::memchr(b' ', &s[i..]).map_or(s.len(), |e| i + e);
                h.name = Some(&s[i..end]);
                i = end;
            }
            _ => return None,
        }
    }
    let close = i + memchr::memchr(b']', &s[i..])?;
    h.ip = ip(&s[i + 1..close]);
    i = close + 1;
    if s.get(i) == Some(&b':') {
        let end = s[i + 1..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(s.len(), |e| i + 1 + e);
        if end > i + 1 {
            h.port = number(&s[i + 1..end]);
            i = end;
        }
    }
    Some((h, i))
}

/// `[ip]:port` after `I=`.
fn interface(s: &[u8]) -> (Option<IpAddr>, Option<u16>) {
    match host(s) {
        Some((h, _)) => (h.ip, h.port),
        None => (None, None),
    }
}

/// The `key=value` fields of a line, read up to the first word that is not one; that
/// word and what follows are the `tail`. A field ending in `:` also ends them (bounce
/// lines: `R=bouncer: this mailbox is gone`), the text after it becoming the tail.
#[derive(Debug, Default)]
struct Fields<'a> {
    a: Option<&'a [u8]>,
    h: Option<Host<'a>>,
    i: Option<&'a [u8]>,
    p: Option<&'a [u8]>,
    s: Option<&'a [u8]>,
    id: Option<&'a [u8]>,
    u: Option<&'a [u8]>,
    r: Option<&'a [u8]>,
    t: Option<&'a [u8]>,
    f: Option<&'a [u8]>,
    x: bool,
    /// The recipients after `for` (arrivals with `+received_recipients`), space-separated.
    rcpts: Option<&'a [u8]>,
    tail: &'a [u8],
    /// The tail followed a `:` (it is a reason).
    colon: bool,
}

impl<'a> Fields<'a> {
    fn read(s: &'a [u8]) -> Fields<'a> {
        let mut f = Fields::default();
        let mut i = 0;
        loop {
            while s.get(i) == Some(&b' ') {
                i += 1;
            }
            if i >= s.len() {
                f.tail = &[];
                return f;
            }
            let rest = &s[i..];
            if let Some(h) = rest.strip_prefix(b"H=") {
                if let Some((host, used)) = host(h) {
                    f.h = Some(host);
                    i += 2 + used;
                    if s.get(i) == Some(&b':') {
                        f.colon = true;
                        f.tail = trim_start(&s[i + 1..]);
                        return f;
                    }
                    continue;
                }
            }
            if rest.starts_with(b"for ") {
                f.rcpts = Some(&rest[4..]);
                f.tail = &[];
                return f;
            }
            // Flags such as `K` (CHUNKING) between the fields.
            if rest.len() >= 2 && rest[0].is_ascii_uppercase() && rest[1] == b' ' {
                i += 2;
                continue;
            }
            // A key: 1 to 11 letters and digits, then `=` (one pass over them).
            let key = rest
                .iter()
                .take(12)
                .position(|b| !b.is_ascii_alphanumeric());
            let Some(eq) = key.filter(|&e| e > 0 && rest[e] == b'=') else {
                f.tail = rest;
                return f;
            };
            let value_start = eq + 1;
            let end = if rest.get(value_start) == Some(&b'"') {
                quoted_end(rest, value_start)
            } else {
                memchr::memchr(b' ', rest).unwrap_or(rest.len())
            };
            let mut value = &rest[value_start..end];
            let mut stop = false;
            if let Some(v) = value.strip_suffix(b":") {
                value = v;
                stop = true;
            }
            match &rest[..eq] {
                b"A" => f.a = Some(value),
                b"I" => f.i = Some(value),
                b"P" => f.p = Some(value),
                b"S" => f.s = Some(value),
                b"id" => f.id = Some(value),
                b"U" => f.u = Some(value),
                b"R" => f.r = Some(value),
                b"T" => f.t = Some(value),
                b"F" => f.f = Some(value),
                b"X" => f.x = true,
                _ => {}
            }
            i += end;
            if stop {
                f.colon = true;
                f.tail = trim_start(&s[i..]);
                return f;
            }
        }
    }

    /// The recipients after `for`.
    fn recipients(&self) -> impl Iterator<Item = &'a [u8]> {
        self.rcpts
            .unwrap_or_default()
            .split(|&b| b == b' ')
            .filter(|a| !a.is_empty())
    }
}

/// The end of a `"..."` value starting at `open` (backslash escapes honoured).
fn quoted_end(s: &[u8], open: usize) -> usize {
    let mut k = open + 1;
    while let Some(at) = memchr::memchr2(b'\\', b'"', &s[k.min(s.len())..]) {
        k += at;
        if s[k] == b'"' {
            return k + 1;
        }
        k += 2;
    }
    s.len()
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

/// `<addr>` → `addr`.
fn angle(s: &[u8]) -> &[u8] {
    s.strip_prefix(b"<")
        .and_then(|s| s.strip_suffix(b">"))
        .unwrap_or(s)
}

/// The first word of `s` and what follows it.
fn word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[]),
    }
}

/// The per-line values every event of a line shares.
struct Line<'c, 'l> {
    time: jiff::Timestamp,
    pid: Option<u32>,
    ctx: &'c LineContext,
    /// The message after the prefix, which the fields kept are text of.
    text: LineText<'l>,
}

impl Line<'_, '_> {
    /// A new event of this line, boxed as [`Parsed::Event`] holds it.
    fn event(&self, kind: EventKind) -> Box<LogEvent> {
        let mut e = Box::new(LogEvent::new(kind, self.time, self.ctx));
        e.pid = self.pid;
        e
    }

    /// A field of the line as text.
    fn text(&self, field: &[u8]) -> CompactString {
        self.text.text(field)
    }

    /// Sets the client fields of `e` from a host.
    fn set_client(&self, e: &mut LogEvent, h: &Host<'_>) {
        e.ip = h.ip;
        e.port = h.port;
        e.helo = h.helo.map(|b| self.text(b));
        e.host_name = h.name.map(|b| self.text(b));
    }

    /// Fills the client fields of `e` from `fields`.
    fn client(&self, e: &mut LogEvent, f: &Fields<'_>) {
        if let Some(h) = f.h {
            self.set_client(e, &h);
        }
        if let Some(i) = f.i {
            (e.local_ip, e.local_port) = interface(i);
        }
        if let Some(a) = f.a {
            let (name, id) = split_auth(a);
            e.authenticator = Some(self.text(name));
            e.user = id.map(|b| self.text(b));
        }
    }

    /// A line that starts with a message id.
    fn message(&self, msgid: &[u8], body: &[u8]) -> Parsed {
        let arrow = body.get(..3);
        match arrow {
            Some(b"<= ") => self.arrival(msgid, &body[3..]),
            Some(b"=> " | b"-> " | b"*> ") => {
                self.delivery(msgid, EventKind::Delivery, body[0] == b'*', &body[3..])
            }
            Some(b"== ") => self.delivery(msgid, EventKind::Deferral, false, &body[3..]),
            Some(b"** ") => self.delivery(msgid, EventKind::Bounce, false, &body[3..]),
            _ if body.starts_with(b"Completed") => {
                let mut e = self.event(EventKind::Completed);
                e.msgid = Some(self.text(msgid));
                e.into()
            }
            _ if body.starts_with(b"H=") || body.starts_with(b"F=") || body.starts_with(b"U=") => {
                match self.host_line(body) {
                    Parsed::Event(mut e) => {
                        e.msgid = Some(self.text(msgid));
                        Parsed::Event(e)
                    }
                    // Other per-message host lines: delivery attempts, SMTP errors.
                    _ => Parsed::Irrelevant,
                }
            }
            _ if body.starts_with(b"SMTP connection from ") => match self.connection(body) {
                Parsed::Event(mut e) => {
                    e.msgid = Some(self.text(msgid));
                    Parsed::Event(e)
                }
                other => other,
            },
            _ => match self.admin(msgid, body) {
                Some(e) => e.into(),
                None => Parsed::Irrelevant,
            },
        }
    }

    /// `<= sender fields...`
    fn arrival(&self, msgid: &[u8], body: &[u8]) -> Parsed {
        let (sender, rest) = word(body);
        let f = Fields::read(rest);
        let mut e = self.event(EventKind::Arrival);
        e.msgid = Some(self.text(msgid));
        e.sender = Some(self.text(angle(sender)));
        self.client(&mut e, &f);
        e.protocol = f.p.and_then(received_protocol);
        e.size = f.s.and_then(number);
        e.message_id = f.id.map(|id| self.text(angle(id)));
        e.local_user = f.u.map(|b| self.text(b));
        e.tls = f.x.then_some(true);
        e.recipients = f.recipients().map(|r| self.text(r)).collect();
        if !e.recipients.is_empty() {
            e.rcpt_count = u32::try_from(e.recipients.len()).ok();
        }
        if e.user.is_none() {
            return e.into();
        }
        let mut auth = LogEvent::new(EventKind::Auth, self.time, self.ctx);
        auth.pid = self.pid;
        auth.result = Some(Outcome::Ok);
        auth.user = e.user.clone();
        auth.authenticator = e.authenticator.clone();
        auth.ip = e.ip;
        auth.port = e.port;
        auth.local_ip = e.local_ip;
        auth.local_port = e.local_port;
        auth.helo = e.helo.clone();
        auth.host_name = e.host_name.clone();
        auth.protocol = Some(Protocol::Smtp);
        auth.tls = e.tls;
        auth.msgid = e.msgid.clone();
        Parsed::Events(vec![auth, *e])
    }

    /// `=>`, `->`, `*>`, `==` and `**`: `addr [<orig>] [(parent)] fields [: reason]`.
    fn delivery(&self, msgid: &[u8], kind: EventKind, suppressed: bool, body: &[u8]) -> Parsed {
        let (mut addr, mut rest) = word(body);
        let mut colon = false;
        if let Some(a) = addr.strip_suffix(b":") {
            addr = a;
            colon = true;
        }
        let mut original = None;
        while !colon && matches!(rest.first(), Some(b'<' | b'(')) {
            let (w, r) = word(rest);
            let w = match w.strip_suffix(b":") {
                Some(w) => {
                    colon = true;
                    w
                }
                None => w,
            };
            if w.starts_with(b"<") {
                original = Some(angle(w));
            }
            rest = r;
        }
        let f = if colon {
            Fields {
                tail: rest,
                colon: true,
                ..Fields::default()
            }
        } else {
            Fields::read(rest)
        };
        let mut e = self.event(kind);
        e.msgid = Some(self.text(msgid));
        e.recipients = vec![self.text(original.unwrap_or(addr))];
        e.router = f.r.map(|b| self.text(b));
        e.transport = f.t.map(|b| self.text(b));
        if let Some(h) = f.h {
            e.remote_ip = h.ip;
            e.host_name = h.name.map(|b| self.text(b));
        }
        e.sender = f.f.map(|s| self.text(angle(s)));
        e.size = f.s.and_then(number);
        e.tls = f.x.then_some(true);
        if suppressed {
            e.reason = Some("delivery suppressed".into());
        } else if kind != EventKind::Delivery && !f.tail.is_empty() {
            e.reason = Some(self.text(strip_timing(f.tail)));
        }
        e.into()
    }

    /// `frozen by root`, `removed by admin`, ...
    fn admin(&self, msgid: &[u8], body: &[u8]) -> Option<Box<LogEvent>> {
        const VERBS: [&[u8]; 9] = [
            b"frozen",
            b"unfrozen",
            b"thawed",
            b"removed",
            b"cancelled",
            b"marked",
            b"added",
            b"edited",
            b"changed",
        ];
        let by = body.len() - body.iter().rev().position(|&b| b == b' ')?;
        let phrase = body[..by - 1].strip_suffix(b" by")?;
        let admin = &body[by..];
        if admin.is_empty() || !VERBS.iter().any(|v| find(phrase, v).is_some()) {
            return None;
        }
        let mut e = self.event(EventKind::AdminAction);
        e.msgid = Some(self.text(msgid));
        e.action = Some(self.text(phrase));
        e.admin = Some(self.text(admin));
        Some(e)
    }

    /// A line about a connection, not a message.
    fn connection(&self, body: &[u8]) -> Parsed {
        if body.starts_with(b"H=") || body.starts_with(b"F=") || body.starts_with(b"U=") {
            return self.host_line(body);
        }
        if let Some(rest) = body.strip_prefix(b"SMTP connection from ") {
            let Some((h, f)) = host_fields(rest) else {
                return NO_HOST;
            };
            let (kind, reason) = if find(f.tail, b"connection count").is_some() {
                (EventKind::Connection, None)
            } else {
                (EventKind::Disconnection, Some(f.tail))
            };
            return self.client_event(kind, &h, &f, reason, None).into();
        }
        for (lead, reason) in [
            (&b"no MAIL in SMTP connection from "[..], &b"no MAIL"[..]),
            (
                b"unexpected disconnection while reading SMTP command from ",
                b"unexpected disconnection",
            ),
            (
                b"SMTP command timeout on connection from ",
                b"SMTP command timeout",
            ),
            (
                b"SMTP command timeout on TLS connection from ",
                b"SMTP command timeout",
            ),
            (
                b"SMTP data timeout (message abandoned) on connection from ",
                b"SMTP data timeout",
            ),
        ] {
            if let Some(rest) = body.strip_prefix(lead) {
                return self.host_event(EventKind::Disconnection, rest, Some(reason), None);
            }
        }
        for (lead, action) in [
            (&b"Connection from "[..], "connect"),
            (b"SMTP call from ", "protocol"),
        ] {
            if let Some(rest) = body.strip_prefix(lead) {
                let Some((h, f)) = host_fields(rest) else {
                    return NO_HOST;
                };
                let tail = f.tail.strip_prefix(b": ").unwrap_or(f.tail);
                return self
                    .client_event(EventKind::Rejection, &h, &f, Some(tail), Some(action))
                    .into();
            }
        }
        if body.starts_with(b"SMTP protocol synchronization error") {
            // The client's input follows the host: take the first H=.
            return match find(body, b" H=") {
                Some(at) => {
                    let reason = &body[..at];
                    self.host_event(
                        EventKind::Rejection,
                        &body[at + 3..],
                        Some(reason),
                        Some("protocol"),
                    )
                }
                None => Parsed::DeadLetter("SMTP synchronization error without a host"),
            };
        }
        if body.starts_with(b"SMTP protocol error in ")
            || body.starts_with(b"SMTP syntax error in ")
        {
            // The client's command comes first, quoted: take the last `" H=`.
            return match rfind(body, b"\" H=") {
                Some(at) => {
                    let Some((h, f)) = host_fields(&body[at + 4..]) else {
                        return NO_HOST;
                    };
                    let what = &body[..at + 1];
                    let mut reason = what.to_vec();
                    if !f.tail.is_empty() {
                        reason.extend_from_slice(b": ");
                        reason.extend_from_slice(f.tail);
                    }
                    let mut e =
                        self.client_event(EventKind::Rejection, &h, &f, None, Some("protocol"));
                    e.reason = Some(self.text(&reason));
                    e.into()
                }
                None => Parsed::Irrelevant,
            };
        }
        if let Some(at) = find(body, b" authenticator failed for ") {
            return self.auth_failure(&body[..at], &body[at + 26..]);
        }
        const IRRELEVANT: [&[u8]; 11] = [
            b"Start queue run",
            b"End queue run",
            b"exim ",
            b"Warning:",
            b"TLS error",
            b"SMTP connection lost",
            b"cwd=",
            b"daemon ",
            b"Tainted",
            b"DKIM:",
            b"SMTP ",
        ];
        if IRRELEVANT.iter().any(|p| body.starts_with(p)) {
            Parsed::Irrelevant
        } else {
            Parsed::Unrecognised
        }
    }

    /// An event from a host spec at the start of `rest` (plus `I=`), with a reason.
    fn host_event(
        &self,
        kind: EventKind,
        rest: &[u8],
        reason: Option<&[u8]>,
        action: Option<&'static str>,
    ) -> Parsed {
        match host_fields(rest) {
            Some((h, f)) => self.client_event(kind, &h, &f, reason, action).into(),
            None => NO_HOST,
        }
    }

    /// An event from a client host and the fields after it (`I=`), with a reason.
    fn client_event(
        &self,
        kind: EventKind,
        h: &Host<'_>,
        f: &Fields<'_>,
        reason: Option<&[u8]>,
        action: Option<&'static str>,
    ) -> Box<LogEvent> {
        let mut e = self.event(kind);
        self.set_client(&mut e, h);
        if let Some(i) = f.i {
            (e.local_ip, e.local_port) = interface(i);
        }
        e.protocol = Some(Protocol::Smtp);
        e.reason = reason
            .map(trim_start)
            .filter(|r| !r.is_empty())
            .map(|r| self.text(strip_timing(r.strip_prefix(b": ").unwrap_or(r))));
        e.action = action.map(CompactString::const_new);
        e
    }

    /// `NAME authenticator failed for HOST[ I=..]: 535 text (set_id=user)[: more]`.
    fn auth_failure(&self, name: &[u8], rest: &[u8]) -> Parsed {
        let Some((h, used)) = host(rest) else {
            return Parsed::DeadLetter("authenticator failure without a readable host");
        };
        let mut after = &rest[used..];
        let mut local = (None, None);
        if let Some(i) = after.strip_prefix(b" I=") {
            let end = i
                .iter()
                .position(|&b| b == b':' || b == b' ')
                .unwrap_or(i.len());
            // `[ip]:port:` — the port's colon is not the end of the host.
            let end = match host(i) {
                Some((_, used)) => used,
                None => end,
            };
            local = interface(&i[..end]);
            after = &i[end..];
        }
        let Some(msg) = after.strip_prefix(b": ") else {
            return Parsed::DeadLetter("authenticator failure without a reply");
        };
        let mut e = self.event(EventKind::Auth);
        e.result = Some(Outcome::Fail);
        e.authenticator = Some(self.text(name));
        e.protocol = Some(Protocol::Smtp);
        self.set_client(&mut e, &h);
        (e.local_ip, e.local_port) = local;
        let mut reason = msg;
        if let Some(at) = find(msg, b" (set_id=") {
            let id = &msg[at + 9..];
            // The id ends at the `)` that ends the line or precedes `: `.
            let close = (0..id.len())
                .rev()
                .find(|&k| id[k] == b')' && (k + 1 == id.len() || id[k + 1..].starts_with(b": ")));
            if let Some(close) = close {
                e.user = Some(self.text(&id[..close])).filter(|u| !u.is_empty());
                let mut r = msg[..at].to_vec();
                r.extend_from_slice(&id[close + 1..]);
                e.reason = Some(self.text(&r));
            }
        }
        if e.reason.is_none() {
            // `535 Incorrect authentication data: 1 Time(s)` (log summarisers).
            if let Some(at) = find(reason, b": ") {
                if reason[at + 2..].ends_with(b"Time(s)") {
                    reason = &reason[..at];
                }
            }
            e.reason = Some(self.text(reason));
        }
        if msg.first() == Some(&b'4') {
            e.temporary = Some(true);
        }
        e.into()
    }

    /// `H=host [I=..] [F=<sender>] [A=auth:id] rejected ...` and other host lines.
    fn host_line(&self, body: &[u8]) -> Parsed {
        let f = Fields::read(body);
        let tail = f.tail;
        let (temporary, phrase) = if let Some(p) = tail.strip_prefix(b"temporarily rejected ") {
            (true, p)
        } else if let Some(p) = tail.strip_prefix(b"rejected ") {
            (false, p)
        } else if let Some(p) = tail.strip_prefix(b"sender verify fail for ") {
            return self.rejection(&f, false, "sender_verify", Some(p), reason_after(p));
        } else if let Some(p) = tail.strip_prefix(b"sender verify defer for ") {
            return self.rejection(&f, true, "sender_verify", Some(p), reason_after(p));
        } else if tail.starts_with(b"dropped: ") {
            return self.rejection(&f, false, "protocol", None, Some(&tail[9..]));
        } else if find(tail, b"temporarily rejected").is_some() {
            return self.rejection(&f, true, "other", None, Some(tail));
        } else {
            return Parsed::Irrelevant;
        };
        let (action, address, reason) = if let Some(p) = phrase.strip_prefix(b"RCPT ") {
            ("rcpt", Some(p), reason_after(p))
        } else if let Some(p) = phrase.strip_prefix(b"MAIL ") {
            ("mail", Some(p), reason_after(p))
        } else if let Some(p) = phrase.strip_prefix(b"after DATA") {
            ("data", None, p.strip_prefix(b": "))
        } else if phrase.starts_with(b"connection") {
            ("connect", None, reason_after(phrase))
        } else if phrase.starts_with(b"EHLO") || phrase.starts_with(b"HELO") {
            ("helo", None, reason_after(phrase))
        } else {
            ("other", None, Some(phrase))
        };
        let mut p = self.rejection(&f, temporary, action, None, reason);
        if let (Parsed::Event(e), Some(address)) = (&mut p, address) {
            let (addr, _) = word(address);
            let addr = self.text(angle(addr.strip_suffix(b":").unwrap_or(addr)));
            if action == "mail" {
                e.sender = Some(addr);
            } else {
                e.recipients = vec![addr];
            }
        }
        p
    }

    fn rejection(
        &self,
        f: &Fields<'_>,
        temporary: bool,
        action: &'static str,
        sender: Option<&[u8]>,
        reason: Option<&[u8]>,
    ) -> Parsed {
        if f.h.is_none() {
            return Parsed::DeadLetter("rejection without a readable host");
        }
        let mut e = self.event(EventKind::Rejection);
        self.client(&mut e, f);
        e.protocol = Some(Protocol::Smtp);
        e.sender = f.f.map(|s| self.text(angle(s)));
        if let Some(s) = sender {
            let (addr, _) = word(s);
            e.sender = Some(self.text(angle(addr.strip_suffix(b":").unwrap_or(addr))));
        }
        e.action = Some(CompactString::const_new(action));
        e.temporary = temporary.then_some(true);
        e.reason = reason.map(|r| self.text(strip_timing(r)));
        e.into()
    }

    /// A paniclog line.
    fn panic(&self, msgid: Option<&[u8]>, body: &[u8]) -> Parsed {
        let mut e = self.event(EventKind::Panic);
        e.msgid = msgid.map(|b| self.text(b));
        let mut end = body.len().min(MAX_PANIC_TEXT);
        while end < body.len() && end > 0 && (body[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        e.reason = Some(self.text(&body[..end]));
        e.into()
    }

    /// `exim-access: {...}`.
    fn json(&self, msgid: Option<&[u8]>, json: &[u8]) -> Parsed {
        let Ok(j) = serde_json::from_slice::<JsonLine>(json) else {
            return Parsed::DeadLetter("malformed exim-access JSON line");
        };
        if j.v != 1 {
            return Parsed::DeadLetter("exim-access JSON line of an unknown version");
        }
        let mut e = self.event(j.event);
        e.result = match j.result.as_deref() {
            Some("ok") => Some(Outcome::Ok),
            Some("fail") => Some(Outcome::Fail),
            None if j.event != EventKind::Auth => None,
            _ => return Parsed::DeadLetter("exim-access JSON auth line without result ok|fail"),
        };
        let ip_of = |s: Option<CompactString>| match s.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => crate::protocol::parse_ip(s),
        };
        let (Ok(ip), Ok(local_ip)) = (ip_of(j.ip), ip_of(j.local_ip)) else {
            return Parsed::DeadLetter("exim-access JSON line with a bad address");
        };
        e.user = j.user.filter(|u| !u.is_empty());
        e.ip = ip;
        e.port = j.port.filter(|&p| p != 0);
        e.local_ip = local_ip;
        e.local_port = j.local_port.filter(|&p| p != 0);
        e.protocol = j.protocol.or(Some(Protocol::Smtp));
        e.mech = j.mech;
        e.authenticator = j.authenticator;
        e.helo = j.helo;
        e.host_name = j.host_name;
        e.msgid = j.msgid.or_else(|| msgid.map(|b| self.text(b)));
        e.message_id = j.message_id;
        e.session = j.session;
        e.sender = j.sender;
        e.recipients = j.recipients;
        if let Some(r) = j.rcpt {
            e.recipients.push(r);
        }
        e.rcpt_count = j.rcpts;
        e.size = j.size;
        e.tls = j.tls;
        e.temporary = j.temporary.filter(|&t| t);
        e.reason = j.reason;
        e.action = j.action;
        e.admin = j.admin;
        e.mailbox = j.mailbox;
        e.into()
    }
}

/// The structured line's JSON object (see the module doc).
#[derive(Debug, Deserialize)]
struct JsonLine {
    v: u32,
    event: EventKind,
    result: Option<CompactString>,
    user: Option<CompactString>,
    ip: Option<CompactString>,
    port: Option<u16>,
    local_ip: Option<CompactString>,
    local_port: Option<u16>,
    protocol: Option<Protocol>,
    mech: Option<CompactString>,
    authenticator: Option<CompactString>,
    helo: Option<CompactString>,
    host_name: Option<CompactString>,
    msgid: Option<CompactString>,
    message_id: Option<CompactString>,
    session: Option<CompactString>,
    sender: Option<CompactString>,
    #[serde(default)]
    recipients: Vec<CompactString>,
    rcpt: Option<CompactString>,
    rcpts: Option<u32>,
    size: Option<u64>,
    tls: Option<bool>,
    temporary: Option<bool>,
    reason: Option<CompactString>,
    action: Option<CompactString>,
    admin: Option<CompactString>,
    mailbox: Option<CompactString>,
}

/// `A=name:id` → (`name`, `id`).
fn split_auth(a: &[u8]) -> (&[u8], Option<&[u8]>) {
    match a.iter().position(|&b| b == b':') {
        Some(i) if i + 1 < a.len() => (&a[..i], Some(&a[i + 1..])),
        Some(i) => (&a[..i], None),
        None => (a, None),
    }
}

/// `P=` → the protocol: any `*smtp*` over the network is SMTP, `local*` is local.
fn received_protocol(p: &[u8]) -> Option<Protocol> {
    if p.starts_with(b"local") {
        Some(Protocol::Local)
    } else if find(p, b"smtp").is_some() {
        Some(Protocol::Smtp)
    } else {
        None
    }
}

/// The text after `<addr>: ` in `RCPT <addr>: reason`.
fn reason_after(p: &[u8]) -> Option<&[u8]> {
    find(p, b": ").map(|at| &p[at + 2..])
}

/// Drops trailing ` DT=0s` / ` D=1s` / ` C=...` timing fields from a reason.
fn strip_timing(mut r: &[u8]) -> &[u8] {
    loop {
        let Some(sp) = r.iter().rposition(|&b| b == b' ') else {
            return r;
        };
        let last = &r[sp + 1..];
        if [&b"DT="[..], b"D=", b"QT=", b"C=", b"I="]
            .iter()
            .any(|p| last.starts_with(p))
        {
            r = &r[..sp];
        } else {
            return r;
        }
    }
}

/// What a connection line whose host spec does not read becomes.
const NO_HOST: Parsed = Parsed::DeadLetter("connection line without a readable host");

/// A host spec at the start of `rest` and the fields after it (`I=`, the tail): read once.
fn host_fields(rest: &[u8]) -> Option<(Host<'_>, Fields<'_>)> {
    let (h, used) = host(rest)?;
    Some((h, Fields::read(&rest[used..])))
}

/// The last position of `needle` in `hay`.
fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| hay[i..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::tests::ctx;
    use crate::sources::{Format, parse_line};

    fn one(line: &str) -> LogEvent {
        match parse_line(Format::Exim, line.as_bytes(), &ctx()) {
            Parsed::Event(e) => *e,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn long_syslog_lines_keep_their_first_piece() {
        let first = "Nov 28 03:21:17 mx1 exim[5642]: [1/2] 2026-11-28 03:21:17 1xXAPn-0007UM-2H <= alice@example.org H=(laptop) [192.0.2.10] P=esmtpa A=plain:alice S=100 for a@example.org b@example.org";
        let events = parse_line(Format::Auto, first.as_bytes(), &ctx()).into_events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].pid, Some(5642));
        assert_eq!(events[1].recipients, ["a@example.org", "b@example.org"]);
        let second = "Nov 28 03:21:17 mx1 exim[5642]: [2\\2] c@example.org d@example.org";
        assert_eq!(
            parse_line(Format::Auto, second.as_bytes(), &ctx()),
            Parsed::Irrelevant
        );
        // Pieces do not nest.
        let nested = "Nov 28 03:21:17 mx1 exim[5642]: [1/2] [1/2] [1/2] x";
        assert_eq!(
            parse_line(Format::Auto, nested.as_bytes(), &ctx()),
            Parsed::Unrecognised
        );
    }

    #[test]
    fn message_ids() {
        assert_eq!(message_id(b"1xXAPn-0007UM-2H <= x"), Some(16));
        assert_eq!(message_id(b"1rAbCd-000ABCdEfGh-1234 <= x"), Some(23));
        assert_eq!(message_id(b"1xXAPn-0007UM-2H"), None);
        assert_eq!(message_id(b"H=(x) [1.2.3.4] F=<>"), None);
    }

    #[test]
    fn hosts() {
        let (h, used) = host(b"mail.example.org (helo.example) [2001:db8::1]:4711 I=x").unwrap();
        assert_eq!(h.name, Some(&b"mail.example.org"[..]));
        assert_eq!(h.helo, Some(&b"helo.example"[..]));
        assert_eq!(h.ip, ip("2001:db8::1"));
        assert_eq!(h.port, Some(4711));
        assert_eq!(used, 50);
        let (h, _) = host(b"([192.168.2.33]) [24.106.174.74]: 535").unwrap();
        assert_eq!(h.helo, Some(&b"[192.168.2.33]"[..]));
        assert_eq!(h.ip, ip("24.106.174.74"));
        assert_eq!(h.port, None);
        assert!(host(b"no address here").is_none());
    }

    #[test]
    fn arrival_with_auth() {
        let line = "2026-11-28 04:52:24 +0000 [30042] 1xXAQC-0007oY-09 <= alice@example.test H=(client.example.test) [127.0.0.1]:57072 I=[127.0.0.1]:2525 P=esmtpa A=plain_server:alice S=511 id=20261128045223.030040@vm T=\"test Sat, 28 Nov 2026\" for bob@example.test carol@example.test";
        let events = parse_line(Format::Exim, line.as_bytes(), &ctx()).into_events();
        assert_eq!(events.len(), 2);
        let (auth, arrival) = (&events[0], &events[1]);
        assert_eq!(auth.kind, EventKind::Auth);
        assert_eq!(auth.result, Some(Outcome::Ok));
        assert_eq!(auth.user.as_deref(), Some("alice"));
        assert_eq!(auth.authenticator.as_deref(), Some("plain_server"));
        assert_eq!(auth.port, Some(57072));
        assert_eq!(arrival.kind, EventKind::Arrival);
        assert_eq!(arrival.sender.as_deref(), Some("alice@example.test"));
        assert_eq!(arrival.ip, ip("127.0.0.1"));
        assert_eq!(arrival.local_port, Some(2525));
        assert_eq!(arrival.size, Some(511));
        assert_eq!(arrival.pid, Some(30042));
        assert_eq!(
            arrival.message_id.as_deref(),
            Some("20261128045223.030040@vm")
        );
        assert_eq!(
            arrival.recipients,
            ["bob@example.test", "carol@example.test"]
        );
        assert_eq!(arrival.rcpt_count, Some(2));
        assert_eq!(arrival.protocol, Some(Protocol::Smtp));
    }

    #[test]
    fn local_arrival_has_no_auth() {
        let e =
            one("2026-11-28 04:52:05 1xXAPt-0007fA-05 <= root@example.test U=root P=local S=299");
        assert_eq!(e.local_user.as_deref(), Some("root"));
        assert_eq!(e.protocol, Some(Protocol::Local));
        let e = one(
            "2026-11-28 04:52:05 1xXAPt-0007fN-0X <= <> R=1xXAPt-0007fA-05 U=Debian-exim P=local S=1521",
        );
        assert_eq!(e.sender.as_deref(), Some(""));
    }

    #[test]
    fn deliveries_deferrals_bounces() {
        let e = one(
            "2026-11-28 04:51:59 1xXAPn-0007UM-2H => bob <bob@example.test> R=local T=local_file",
        );
        assert_eq!(
            (e.kind, e.recipients[0].as_str()),
            (EventKind::Delivery, "bob@example.test")
        );
        assert_eq!(e.transport.as_deref(), Some("local_file"));
        let e = one(
            "2026-11-28 04:51:59 1xXAPn-0007UM-2H -> carol <carol@example.test> R=local T=local_file",
        );
        assert_eq!(e.kind, EventKind::Delivery);
        let e = one(
            "2026-11-28 04:52:05 1xXAPt-0007fV-0d *> alice <alice@example.test> R=local T=local_file",
        );
        assert_eq!(e.reason.as_deref(), Some("delivery suppressed"));
        let e = one(
            "2026-11-28 10:00:00 1xXAPn-0007UM-2H => alice@remote.example <alice@remote.example> R=dnslookup T=remote_smtp H=mx.remote.example [2001:db8::25]:25 X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=yes C=\"250 2.0.0 Ok: queued as 4F\"",
        );
        assert_eq!(e.remote_ip, ip("2001:db8::25"));
        assert_eq!(e.ip, None);
        assert_eq!(e.host_name.as_deref(), Some("mx.remote.example"));
        assert_eq!(e.tls, Some(true));
        let e = one(
            "2026-11-28 04:51:59 1xXAPn-0007UM-2H == someone@remote.test R=remote T=remote_smtp defer (111): Connection refused",
        );
        assert_eq!(e.kind, EventKind::Deferral);
        assert_eq!(e.reason.as_deref(), Some("defer (111): Connection refused"));
        let e = one(
            "2026-11-28 04:51:59 1xXAPn-0007UM-2H ** gone@example.test R=bouncer: this mailbox is gone",
        );
        assert_eq!(e.kind, EventKind::Bounce);
        assert_eq!(e.router.as_deref(), Some("bouncer"));
        assert_eq!(e.reason.as_deref(), Some("this mailbox is gone"));
        let e = one(
            "2026-11-28 04:52:29 +0000 [30097] 1xXAQH-0007pQ-23 ** root@mx.example.test F=<>: Unrouteable address DT=0s",
        );
        assert_eq!(e.sender.as_deref(), Some(""));
        assert_eq!(e.reason.as_deref(), Some("Unrouteable address"));
        let e =
            one("2026-11-28 04:52:05 1xXAPt-0007fN-0X ** root@example.test: Unrouteable address");
        assert_eq!(e.recipients, ["root@example.test"]);
        assert_eq!(e.reason.as_deref(), Some("Unrouteable address"));
    }

    #[test]
    fn completed_and_admin_actions() {
        assert_eq!(
            one("2026-11-28 04:52:05 1xXAPn-0007UM-2H Completed").kind,
            EventKind::Completed
        );
        for (verb, who) in [
            ("frozen", "root"),
            ("unfrozen", "root"),
            ("removed", "admin"),
            ("cancelled", "root"),
            ("thawed", "ops"),
        ] {
            let e = one(&format!(
                "2026-11-28 04:52:05 1xXAPn-0007UM-2H {verb} by {who}"
            ));
            assert_eq!(e.kind, EventKind::AdminAction);
            assert_eq!(e.action.as_deref(), Some(verb));
            assert_eq!(e.admin.as_deref(), Some(who));
        }
        assert_eq!(
            parse_line(
                Format::Exim,
                b"2026-11-28 04:52:05 1xXAPn-0007UM-2H Frozen (delivery error message)",
                &ctx()
            ),
            Parsed::Irrelevant
        );
    }

    #[test]
    fn authenticator_failures() {
        let e = one(
            "2026-11-28 04:52:00 plain_server authenticator failed for (brute) [127.0.0.1]: 535 Incorrect authentication data (set_id=alice)",
        );
        assert_eq!(e.result, Some(Outcome::Fail));
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.helo.as_deref(), Some("brute"));
        assert_eq!(
            e.reason.as_deref(),
            Some("535 Incorrect authentication data")
        );
        assert_eq!(e.temporary, None);
        let e = one(
            "2026-11-28 04:53:10 +0000 [31568] plain_server authenticator failed for (tmp) [127.0.0.1]:46516 I=[127.0.0.1]:2525: 435 Unable to authenticate at present (set_id=tempfail): failed to connect to socket /nonexistent/sock: No such file or directory",
        );
        assert_eq!(e.user.as_deref(), Some("tempfail"));
        assert_eq!(e.port, Some(46516));
        assert_eq!(e.local_ip, ip("127.0.0.1"));
        assert_eq!(e.local_port, Some(2525));
        assert_eq!(e.temporary, Some(true));
        assert_eq!(
            e.reason.as_deref(),
            Some(
                "435 Unable to authenticate at present: failed to connect to socket /nonexistent/sock: No such file or directory"
            )
        );
        let e = one(
            "2013-08-20 07:48:02 login authenticator failed for static-ip.example (USER) [85.25.92.177]: 535 Incorrect authentication data: 1 Time(s)",
        );
        assert_eq!(e.host_name.as_deref(), Some("static-ip.example"));
        assert_eq!(e.user, None);
        assert_eq!(
            e.reason.as_deref(),
            Some("535 Incorrect authentication data")
        );
        let e = one(
            "2026-11-28 04:52:01 PLAIN authenticator failed for (brute6) [2001:db8::7]:40748: 535 Incorrect authentication data (set_id=we(ird))",
        );
        assert_eq!(e.ip, ip("2001:db8::7"));
        assert_eq!(e.user.as_deref(), Some("we(ird)"));
    }

    #[test]
    fn rejections() {
        let e = one(
            "2026-11-28 04:52:01 H=(relayer) [127.0.0.1] F=<outsider@remote.test> rejected RCPT <victim@remote.test>: relay not permitted",
        );
        assert_eq!(e.kind, EventKind::Rejection);
        assert_eq!(e.action.as_deref(), Some("rcpt"));
        assert_eq!(e.sender.as_deref(), Some("outsider@remote.test"));
        assert_eq!(e.recipients, ["victim@remote.test"]);
        assert_eq!(e.reason.as_deref(), Some("relay not permitted"));
        let e = one(
            "2026-11-28 04:52:03 H=(client.example.test) [127.0.0.1] F=<alice@example.test> A=plain_server:alice temporarily rejected RCPT <busy@example.test>: mailbox busy, try later",
        );
        assert_eq!(e.temporary, Some(true));
        assert_eq!(e.user.as_deref(), Some("alice"));
        let e = one(
            "2026-11-28 04:52:02 H=(spammy) [127.0.0.1] rejected MAIL <spammer@bad.test>: sender refused",
        );
        assert_eq!(
            (e.action.as_deref(), e.sender.as_deref()),
            (Some("mail"), Some("spammer@bad.test"))
        );
        let e = one(
            "2026-11-28 04:52:02 1xXAPq-0007bq-2x H=(datay) [127.0.0.1] F=<outsider@remote.test> rejected after DATA: content refused",
        );
        assert_eq!(e.action.as_deref(), Some("data"));
        assert_eq!(e.msgid.as_deref(), Some("1xXAPq-0007bq-2x"));
        let e = one(
            "2013-06-10 10:10:59 H=ufficioestampa.it (srv.ufficioestampa.it) [193.169.56.211] sender verify fail for <user@example.com>: Unrouteable address",
        );
        assert_eq!(e.action.as_deref(), Some("sender_verify"));
        assert_eq!(e.sender.as_deref(), Some("user@example.com"));
        let e = one(
            "2013-06-10 18:33:32 [10099] H=(yakult.com.tw) [202.132.70.178]:3755 I=[1.2.3.4]:25 F=menacedsj04@listserv.eurasia.org rejected RCPT dir@ml3.ru: relay not permitted",
        );
        assert_eq!(e.recipients, ["dir@ml3.ru"]);
        assert_eq!(
            e.sender.as_deref(),
            Some("menacedsj04@listserv.eurasia.org")
        );
    }

    #[test]
    fn connections() {
        let e = one(
            "2026-11-28 04:52:24 +0000 [30025] SMTP connection from [127.0.0.1]:57070 I=[127.0.0.1]:2525 (TCP/IP connection count = 1)",
        );
        assert_eq!(e.kind, EventKind::Connection);
        assert_eq!(e.port, Some(57070));
        let e = one(
            "2026-11-28 04:52:24 +0000 [30042] SMTP connection from (client.example.test) [127.0.0.1]:57072 I=[127.0.0.1]:2525 closed by QUIT",
        );
        assert_eq!(e.kind, EventKind::Disconnection);
        assert_eq!(e.reason.as_deref(), Some("closed by QUIT"));
        let e = one(
            "2026-11-28 04:52:24 +0000 [30041] SMTP connection from [127.0.0.1]:57070 I=[127.0.0.1]:2525 lost D=0s",
        );
        assert_eq!(e.reason.as_deref(), Some("lost"));
        let e = one(
            "2026-11-28 04:52:24 +0000 [30054] no MAIL in SMTP connection from (brute) [127.0.0.1]:57082 I=[127.0.0.1]:2525 D=0s C=EHLO,AUTH,QUIT",
        );
        assert_eq!(
            (e.kind, e.reason.as_deref()),
            (EventKind::Disconnection, Some("no MAIL"))
        );
        let e = one(
            "2016-03-21 04:07:49 [25874] 1ahr79-0006jK-G9 SMTP connection from (voyeur.webair.com) [174.137.147.204]:44884 I=[172.89.0.6]:25 closed by DROP in ACL",
        );
        assert_eq!(e.reason.as_deref(), Some("closed by DROP in ACL"));
    }

    #[test]
    fn protocol_errors() {
        let e = one(
            "2016-03-18 00:34:06 [7513] SMTP protocol error in \"AUTH LOGIN\" H=(ylmf-pc) [45.32.34.167]:60723 I=[172.89.0.6]:587 AUTH command used when not advertised",
        );
        assert_eq!((e.kind, e.ip), (EventKind::Rejection, ip("45.32.34.167")));
        assert_eq!(
            e.reason.as_deref(),
            Some("SMTP protocol error in \"AUTH LOGIN\": AUTH command used when not advertised")
        );
        let e = one(
            "2013-06-02 06:54:20 [13314] SMTP protocol synchronization error (input sent without waiting for greeting): rejected connection from H=[211.148.195.192]:25936 I=[1.2.3.4]:25 input=\"GET / HTTP/1.1\\r\\n\\r\\n\"",
        );
        assert_eq!(e.ip, ip("211.148.195.192"));
        let e = one(
            "2013-06-02 09:22:05 [19591] SMTP call from pc012-6201.spo.scu.edu.tw [163.14.21.161]:3767 I=[1.2.3.4]:25 dropped: too many nonmail commands (last was \"RSET\")",
        );
        assert_eq!(e.ip, ip("163.14.21.161"));
        assert_eq!(
            e.reason.as_deref(),
            Some("dropped: too many nonmail commands (last was \"RSET\")")
        );
        // An injected H= inside the client's command does not win.
        let e = one(
            "2016-03-18 00:34:06 SMTP protocol error in \"AUTH H=[192.0.2.1]\" H=(x) [198.51.100.9]:1 AUTH command used when not advertised",
        );
        assert_eq!(e.ip, ip("198.51.100.9"));
    }

    #[test]
    fn json_lines() {
        let events = parse_line(Format::Exim, br#"2026-11-28 04:53:08 [31493] exim-access: {"v":1,"event":"auth","result":"ok","user":"alice","ip":"127.0.0.1","port":52116,"authenticator":"plain_server","helo":"client.example.test","future":[1,2]}"#, &ctx()).into_events();
        let e = &events[0];
        assert_eq!((e.kind, e.result), (EventKind::Auth, Some(Outcome::Ok)));
        assert_eq!(e.port, Some(52116));
        assert_eq!(e.pid, Some(31493));
        let e = one(
            r#"2026-11-28 04:53:08 1xXAQu-0008Bx-1S exim-access: {"v":1,"event":"arrival","user":"alice","ip":"","rcpts":4,"size":309}"#,
        );
        assert_eq!(e.msgid.as_deref(), Some("1xXAQu-0008Bx-1S"));
        assert_eq!(e.ip, None);
        assert_eq!(e.rcpt_count, Some(4));
        for bad in [
            r#"{"v":2,"event":"auth","result":"ok"}"#,
            r#"{"v":1,"event":"auth"}"#,
            r#"{"v":1,"event":"nonsense"}"#,
            r#"{"v":1,"event":"auth","result":"ok","ip":"1.2.3"}"#,
            r#"{"v":1,"event":"auth","result":"ok","port":"x"}"#,
            r#"{"v":1,"event":"auth""#,
        ] {
            let line = format!("2026-11-28 04:53:08 exim-access: {bad}");
            assert!(
                matches!(
                    parse_line(Format::Exim, line.as_bytes(), &ctx()),
                    Parsed::DeadLetter(_)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn paniclog_lines_are_panics() {
        let mut c = ctx();
        c.paniclog = true;
        let e = match parse_line(Format::Exim, b"2026-11-28 04:53:12 +0000 [32240] 1xXAQy-0008O0-2M exim-access: panic test from 127.0.0.1", &c) {
            Parsed::Event(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(e.kind, EventKind::Panic);
        assert_eq!(e.msgid.as_deref(), Some("1xXAQy-0008O0-2M"));
        assert_eq!(
            e.reason.as_deref(),
            Some("exim-access: panic test from 127.0.0.1")
        );
    }

    #[test]
    fn irrelevant_and_unrecognised() {
        for line in [
            "2026-11-28 04:51:59 exim 4.96 daemon started: pid=28781, no queue runs, listening for SMTP on [127.0.0.1]:2525",
            " Suggested action: either install a certificate or change tls_advertise_hosts option",
            "2026-11-28 04:51:59 1xXAPn-0007UM-2H H=127.0.0.1 [127.0.0.1] Connection refused",
            "2026-11-28 04:51:59 Start queue run: pid=1",
        ] {
            assert_eq!(
                parse_line(Format::Exim, line.as_bytes(), &ctx()),
                Parsed::Irrelevant,
                "{line}"
            );
        }
        assert_eq!(
            parse_line(
                Format::Exim,
                b"2026-11-28 04:51:59 imap-login: Info: x",
                &ctx()
            ),
            Parsed::Unrecognised
        );
        assert_eq!(
            parse_line(Format::Exim, b"no timestamp <= at all", &ctx()),
            Parsed::DeadLetter("unrecognised line that mentions authentication or mail")
        );
    }
}
