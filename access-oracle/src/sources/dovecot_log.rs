//! Dovecot log lines (2.3, older 2.x and 1.x shapes, and 2.4 where it differs).
//!
//! After the [`prefix`](super::prefix) a Dovecot line names its process, optionally its
//! level, then the message: `imap-login: Info: Login: ...`, `auth: Info:
//! passwd-file(alice,192.0.2.1,<sess>): Password mismatch`, `imap(alice)<pid><sess>:
//! Info: Disconnected: Logged out in=.. out=..`. Through syslog the level is usually
//! absent and the process follows the `dovecot:` program; both are accepted.
//!
//! | line | event |
//! |---|---|
//! | `*-login: Login: user=<u>, method=M, rip=.., lip=.., mpid=.., TLS, session=<s>` (2.4: `Logged in:`) | `auth` ok |
//! | `*-login: ... (auth failed, N attempts in M secs): user=<u>, ...` (`Disconnected`, older `Aborted login`, 2.3.21+/2.4 `Login aborted: ... (auth_failed)`, bare `(auth failed)`) | `auth` fail with `attempts` = N |
//! | `*-login: ... (no auth attempts ...)`, other `Disconnected` summaries | `disconnection` |
//! | `*-login: ... (tried to use disallowed plaintext auth)`, connection limits | `rejection` |
//! | `auth: passwd-file(u,ip,<s>): Password mismatch` / `unknown user`; `pam(..): pam_authenticate() failed: ..`, `sql(..)`, `ldap(..)`, `auth-worker(pid):`, `auth(default):`, `dovecot-auth:` | `auth` fail per attempt, `passdb` = the driver |
//! | `pam_unix(dovecot:auth): authentication failure; ... rhost=ip user=u` | `auth` fail |
//! | `auth: policy(u,ip,<s>): Authentication failure due to policy server refusal` | `auth` fail |
//! | `auth: Master user logging in as u` (`passdb(master,ip,master,<s>):` prefix when logged) | `admin_action` `master_login` |
//! | `imap(u)<pid><s>: Disconnected: Logged out in=.. out=.. deleted=.. expunged=.. body_count=..` | `logout` |
//! | `pop3(u)<pid><s>: Disconnected: Logged out top=a/b, retr=c/d, del=e/f, size=g` | `logout` |
//! | `imap(u)<..>: save: box=.., uid=.., msgid=<..>, size=..` (`mail_log` plugin: save, copy, delete, undelete, expunge, flag_change; `Mailbox created/deleted/renamed`) | `mailbox_action` |
//! | `lmtp(u)<..>: msgid=<..>: saved mail to BOX` | `mailbox_action` `deliver` |
//!
//! A failed login therefore shows twice with `auth_verbose = yes`: once per attempt from
//! the auth process (`Password mismatch`, no protocol) and once in the login process's
//! summary when the client leaves (`attempts` set, protocol known), both with the same
//! `session`. Whoever counts failures should count per-attempt events and use a summary
//! only for a session that has none (Dovecot's default `auth_verbose = no` logs only the
//! summaries). Authentications Dovecot does for Exim's `dovecot` authenticator appear
//! only as auth-process lines without a session, and Exim logs them too.
//!
//! A master user reading another account shows as `Master user logging in as alice`
//! followed by an ordinary `Login:` of `alice`; a login name `alice*admin` (the common
//! `auth_master_user_separator`) is split into `user` alice and `admin` admin.
//!
//! Mail-log `from=` and `subject=` fields are never kept (metadata only).

use super::prefix::{Prefix, Stamp};
use super::{
    CompactString, EventKind, LineContext, LogEvent, Outcome, Parsed, Protocol, find, ip, number,
    text,
};

/// Parses one Dovecot log line (its prefix already read).
pub fn parse(pre: &Prefix<'_>, ctx: &LineContext) -> Parsed {
    let mut rest = pre.rest;
    // `dovecot: dovecot: auth(default): ...` (old syslog), `dovecot: imap-login: ...`.
    while let Some(r) = rest.strip_prefix(b"dovecot: ") {
        rest = r;
    }
    let Some((process, msg)) = Process::read(rest) else {
        return Parsed::Unrecognised;
    };
    let role = process.role();
    if role == Role::Foreign {
        return Parsed::Unrecognised;
    }
    if pre.stamp == Stamp::None {
        return Parsed::DeadLetter("dovecot line without a timestamp");
    }
    let Some(time) = pre.time(ctx) else {
        return Parsed::DeadLetter("dovecot line with an impossible timestamp");
    };
    let (level, msg) = level(msg);
    if level == Some(Level::Debug) {
        return Parsed::Irrelevant;
    }
    let line = Line {
        time,
        pid: pre.pid,
        ctx,
        process,
    };
    match role {
        Role::Login => line.login(msg),
        Role::Mail => line.mail(msg),
        Role::Auth => line.auth(msg),
        Role::Pam => line.pam(msg),
        Role::Other | Role::Foreign => Parsed::Irrelevant,
    }
}

/// The process prefix: `name(args)<pid><session>:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Process<'a> {
    name: &'a [u8],
    args: Option<&'a [u8]>,
    /// The angle-bracketed parts after the arguments (`<pid>`, `<session>`).
    angles: [Option<&'a [u8]>; 2],
}

/// What kind of Dovecot process a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `imap-login`, `pop3-login`, ...
    Login,
    /// A mail process running as the user: `imap(alice)`, `pop3(alice)`, `lmtp(alice)`.
    Mail,
    /// `auth`, `auth-worker`, `dovecot-auth`.
    Auth,
    /// `pam_unix(dovecot:auth)` lines that PAM writes from Dovecot's auth process.
    Pam,
    /// Other Dovecot processes (master, anvil, config, ...).
    Other,
    /// Not a Dovecot process name.
    Foreign,
}

impl<'a> Process<'a> {
    /// Reads the prefix and returns it with the message after `: `.
    fn read(s: &'a [u8]) -> Option<(Process<'a>, &'a [u8])> {
        let name_len = s.iter().take(40).position(|&b| {
            !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })?;
        if name_len == 0 {
            return None;
        }
        let name = &s[..name_len];
        let mut i = name_len;
        let mut args = None;
        if s.get(i) == Some(&b'(') {
            // The `)` that is followed by `<` or `:`, so that user names may hold `)`.
            let close = (i + 1..s.len())
                .find(|&k| s[k] == b')' && matches!(s.get(k + 1), Some(b'<' | b':')))?;
            args = Some(&s[i + 1..close]);
            i = close + 1;
        }
        let mut angles = [None, None];
        let mut n = 0;
        while s.get(i) == Some(&b'<') {
            let close = i + s[i..].iter().position(|&b| b == b'>')?;
            if n < angles.len() {
                angles[n] = Some(&s[i + 1..close]);
            }
            n += 1;
            i = close + 1;
        }
        if s.get(i) != Some(&b':') {
            return None;
        }
        let msg = s.get(i + 1..)?;
        let msg = msg.strip_prefix(b" ").unwrap_or(msg);
        Some((Process { name, args, angles }, msg))
    }

    fn role(&self) -> Role {
        match self.name {
            n if n.ends_with(b"-login") => Role::Login,
            b"auth" | b"auth-worker" | b"dovecot-auth" => Role::Auth,
            b"pam_unix" | b"pam_ldap" | b"pam_sss" => match self.args {
                Some(a) if find(a, b"dovecot").is_some() => Role::Pam,
                _ => Role::Foreign,
            },
            b"imap"
            | b"pop3"
            | b"submission"
            | b"managesieve"
            | b"lmtp"
            | b"lda"
            | b"doveadm"
            | b"indexer-worker"
            | b"imap-hibernate"
            | b"imap-urlauth-worker"
            | b"quota-status" => {
                if self.args.is_some() {
                    Role::Mail
                } else {
                    Role::Other
                }
            }
            b"master"
            | b"anvil"
            | b"config"
            | b"log"
            | b"stats"
            | b"dict"
            | b"dict-async"
            | b"director"
            | b"replicator"
            | b"aggregator"
            | b"ssl-params"
            | b"indexer"
            | b"imap-urlauth"
            | b"imap-urlauth-login"
            | b"old-stats"
            | b"doveadm-server"
            | b"auth-policy"
            | b"dovecot" => Role::Other,
            _ => Role::Foreign,
        }
    }

    /// The protocol of the service.
    fn protocol(&self) -> Option<Protocol> {
        Protocol::from_service(self.name)
    }
}

/// Dovecot's log levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
    Panic,
}

/// An optional `Info: ` / `Error: ` ... at the start of a message.
fn level(msg: &[u8]) -> (Option<Level>, &[u8]) {
    for (word, l) in [
        (&b"Info: "[..], Level::Info),
        (b"Debug: ", Level::Debug),
        (b"Warning: ", Level::Warning),
        (b"Error: ", Level::Error),
        (b"Fatal: ", Level::Fatal),
        (b"Panic: ", Level::Panic),
    ] {
        if let Some(rest) = msg.strip_prefix(word) {
            return (Some(l), rest);
        }
    }
    (None, msg)
}

/// The `key=value, key=<value>, FLAG` list of login and mail_log lines.
#[derive(Debug, Default)]
struct Pairs<'a> {
    user: Option<&'a [u8]>,
    method: Option<&'a [u8]>,
    rip: Option<&'a [u8]>,
    lip: Option<&'a [u8]>,
    rport: Option<&'a [u8]>,
    lport: Option<&'a [u8]>,
    mpid: Option<&'a [u8]>,
    session: Option<&'a [u8]>,
    master: Option<&'a [u8]>,
    tls: bool,
    mailbox: Option<&'a [u8]>,
    uid: Option<&'a [u8]>,
    msgid: Option<&'a [u8]>,
    size: Option<&'a [u8]>,
}

impl<'a> Pairs<'a> {
    /// Reads a list of `key=value` items separated by `, `.
    fn read(s: &'a [u8]) -> Pairs<'a> {
        let mut p = Pairs::default();
        let mut i = 0;
        while i < s.len() {
            let item = &s[i..];
            let eq = item.iter().take(20).position(|&b| b == b'=').filter(|&e| {
                item[..e]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
            });
            let (key, value, next) = match eq {
                Some(e) if item.get(e + 1) == Some(&b'<') => {
                    // `<...>` up to the `>` that ends the item.
                    let close = (e + 2..item.len())
                        .find(|&k| {
                            item[k] == b'>'
                                && (k + 1 == item.len() || item[k + 1..].starts_with(b", "))
                        })
                        .unwrap_or(item.len());
                    let value = &item[e + 2..close.min(item.len())];
                    (&item[..e], value, close + 1)
                }
                Some(e) => {
                    let end = find(item, b", ").unwrap_or(item.len());
                    (&item[..e], &item[e + 1..end], end)
                }
                None => {
                    let end = find(item, b", ").unwrap_or(item.len());
                    (&item[..end], &b""[..], end)
                }
            };
            match key {
                b"user" => p.user = Some(value),
                b"method" => p.method = Some(value),
                b"rip" => p.rip = Some(value),
                b"lip" => p.lip = Some(value),
                b"rport" => p.rport = Some(value),
                b"lport" => p.lport = Some(value),
                b"mpid" => p.mpid = Some(value),
                b"session" => p.session = Some(value),
                b"master_user" | b"master" => p.master = Some(value),
                b"box" => p.mailbox = Some(value),
                b"uid" => p.uid = Some(value),
                b"msgid" => p.msgid = Some(value),
                b"size" => p.size = Some(value),
                k if k.starts_with(b"TLS") => p.tls = true,
                _ => {}
            }
            i += next;
            while s.get(i).is_some_and(|&b| b == b',' || b == b' ') {
                i += 1;
            }
        }
        p
    }
}

/// Where the pairs of a login summary start: after the `: ` that precedes the first
/// `user=` / `method=` / `rip=`.
fn pairs_start(msg: &[u8]) -> Option<usize> {
    let key = [&b"user="[..], b"method=", b"rip="]
        .iter()
        .filter_map(|k| find(msg, k))
        .min()?;
    let before = &msg[..key];
    Some(
        before
            .windows(2)
            .rposition(|w| w == b": ")
            .map_or(0, |i| i + 2),
    )
}

/// Splits `alice*admin` (master user login) into the user and the master user.
fn split_master(user: &[u8]) -> (&[u8], Option<&[u8]>) {
    match user.iter().position(|&b| b == b'*') {
        Some(i) if i > 0 && i + 1 < user.len() => (&user[..i], Some(&user[i + 1..])),
        _ => (user, None),
    }
}

/// The per-line values every event of a line shares.
struct Line<'c, 'a> {
    time: jiff::Timestamp,
    pid: Option<u32>,
    ctx: &'c LineContext,
    process: Process<'a>,
}

impl Line<'_, '_> {
    fn event(&self, kind: EventKind) -> LogEvent {
        let mut e = LogEvent::new(kind, self.time, self.ctx);
        e.pid = self.pid;
        e.protocol = self.process.protocol();
        e
    }

    /// Fills an event from a login process's pairs.
    fn apply(e: &mut LogEvent, p: &Pairs<'_>) {
        if let Some(u) = p.user.filter(|u| !u.is_empty()) {
            let (user, master) = split_master(u);
            e.user = Some(text(user));
            e.admin = master.or(p.master).map(text);
        }
        e.mech = p.method.map(text);
        e.ip = p.rip.and_then(ip);
        e.local_ip = p.lip.and_then(ip);
        e.port = p.rport.and_then(number);
        e.local_port = p.lport.and_then(number);
        e.session = p.session.map(text);
        if let Some(pid) = p.mpid.and_then(number) {
            e.pid = Some(pid);
        }
        e.tls = p.tls.then_some(true);
    }

    /// Lines of `imap-login`, `pop3-login`, `submission-login`, `managesieve-login`.
    fn login(&self, msg: &[u8]) -> Parsed {
        // 2.3: `Login: user=<..>`; 2.4 (and some 2.3 builds): `Logged in: user=<..>`.
        if let Some(list) = msg
            .strip_prefix(b"Login: ")
            .or_else(|| msg.strip_prefix(b"Logged in: "))
        {
            let p = Pairs::read(list);
            if p.user.is_none() {
                return Parsed::DeadLetter("dovecot Login: line without user");
            }
            let mut e = self.event(EventKind::Auth);
            e.result = Some(Outcome::Ok);
            Self::apply(&mut e, &p);
            return e.into();
        }
        let Some(start) = pairs_start(msg) else {
            if find(msg, b"auth failed").is_some() {
                return Parsed::DeadLetter("dovecot login failure without user or address");
            }
            return Parsed::Irrelevant;
        };
        let p = Pairs::read(&msg[start..]);
        let summary = &msg[..start.saturating_sub(2)];
        // `(auth failed, 3 attempts in 6 secs)`, `(auth failed, 1 attempts)`, `(auth failed)`.
        if let Some(at) = find(summary, b"(auth failed")
            .filter(|&at| matches!(summary.get(at + 12), Some(b',' | b')')))
        {
            let mut e = self.event(EventKind::Auth);
            e.result = Some(Outcome::Fail);
            Self::apply(&mut e, &p);
            let n = summary.get(at + 14..).unwrap_or_default();
            let digits = n.iter().take_while(|b| b.is_ascii_digit()).count();
            e.attempts = number(&n[..digits]);
            e.reason = Some(text(summary));
            return e.into();
        }
        let (kind, action) = if find(summary, b"plaintext auth").is_some() {
            (EventKind::Rejection, Some("plaintext"))
        } else if find(summary, b"Maximum number of connections").is_some()
            || find(summary, b"connections from user").is_some()
        {
            (EventKind::Rejection, Some("connection_limit"))
        } else if summary.starts_with(b"Disconnected")
            || summary.starts_with(b"Aborted login")
            || summary.starts_with(b"Login aborted")
        {
            (EventKind::Disconnection, None)
        } else {
            return Parsed::Irrelevant;
        };
        let mut e = self.event(kind);
        Self::apply(&mut e, &p);
        e.action = action.map(CompactString::const_new);
        e.reason = Some(text(summary));
        e.into()
    }

    /// Lines of mail processes: logouts and the `mail_log` plugin.
    fn mail(&self, msg: &[u8]) -> Parsed {
        let Some(user) = self.process.args.filter(|u| !u.is_empty()) else {
            return Parsed::Irrelevant;
        };
        let mut e = self.event(EventKind::Logout);
        e.user = Some(text(user));
        let [first, second] = self.process.angles;
        if let Some(pid) = first.and_then(number) {
            e.pid = Some(pid);
        }
        e.session = second
            .or(first.filter(|f| number::<u32>(f).is_none()))
            .map(text);
        // The session summary first when the line says so, then the (more common)
        // mail_log lines, then summaries in other shapes (a custom logout format).
        let ends = msg.starts_with(b"Disconnected")
            || msg.starts_with(b"Logged out")
            || msg.starts_with(b"Connection closed");
        if !ends && mailbox_action(&mut e, msg) {
            e.kind = EventKind::MailboxAction;
            return e.into();
        }
        if let Some(kind) = logout(&mut e, msg) {
            e.kind = kind;
            return e.into();
        }
        Parsed::Irrelevant
    }

    /// Lines of the auth process: passdb results, policy, master users.
    fn auth(&self, msg: &[u8]) -> Parsed {
        if let Some(user) = msg.strip_prefix(b"Master user logging in as ") {
            return self.master_login(None, user);
        }
        if msg.starts_with(b"pam_unix(")
            || msg.starts_with(b"pam_sss(")
            || msg.starts_with(b"pam_ldap(")
        {
            return match Process::read(msg) {
                Some((_, m)) => self.pam(m),
                None => Parsed::DeadLetter("unreadable PAM line"),
            };
        }
        let Some((passdb, rest)) = Process::read(msg) else {
            return if find(msg, b"assword mismatch").is_some()
                || find(msg, b"unknown user").is_some()
            {
                Parsed::DeadLetter("dovecot auth failure without a passdb prefix")
            } else {
                Parsed::Irrelevant
            };
        };
        let Some(args) = passdb.args else {
            return Parsed::Irrelevant;
        };
        // 2.4 may put the level after the passdb prefix.
        let (level, rest) = level(rest);
        // auth_verbose_passwords appends "(given password: ...)": never kept.
        let rest = super::redact::before_password(rest);
        if level == Some(Level::Debug) {
            return Parsed::Irrelevant;
        }
        let who = PassdbArgs::read(args);
        if let Some(user) = rest.strip_prefix(b"Master user logging in as ") {
            return self.master_login(Some(&who), user);
        }
        let lower = rest.to_ascii_lowercase();
        let reason: &[u8] = if find(&lower, b"password mismatch").is_some() {
            b"password mismatch"
        } else if find(&lower, b"unknown user").is_some() {
            b"unknown user"
        } else if find(&lower, b"policy server refusal").is_some() {
            b"policy server refusal"
        } else if let Some(at) = find(rest, b"pam_authenticate() failed: ") {
            strip_times(&rest[at + 27..])
        } else if find(&lower, b"invalid credentials").is_some()
            || find(&lower, b"invalid password").is_some()
            || find(&lower, b"authentication failure").is_some()
            || find(&lower, b"disabled").is_some()
            || find(&lower, b"expired").is_some()
        {
            strip_times(rest)
        } else if find(&lower, b"fail").is_some() && level != Some(Level::Error) {
            return Parsed::DeadLetter("dovecot passdb line with an unknown outcome");
        } else {
            return Parsed::Irrelevant;
        };
        let mut e = self.event(EventKind::Auth);
        e.protocol = None;
        e.result = Some(Outcome::Fail);
        e.passdb = Some(text(passdb.name));
        e.user = who.user.map(text);
        e.ip = who.ip.and_then(ip);
        e.session = who.session.map(text);
        if who.master {
            e.admin = e.user.clone();
        }
        e.reason = Some(text(reason));
        e.into()
    }

    /// `Master user logging in as alice`.
    fn master_login(&self, who: Option<&PassdbArgs<'_>>, user: &[u8]) -> Parsed {
        let mut e = self.event(EventKind::AdminAction);
        e.protocol = None;
        e.action = Some("master_login".into());
        e.user = Some(text(user.split(|&b| b == b' ').next().unwrap_or(user)));
        if let Some(who) = who {
            e.admin = who.user.map(text);
            e.ip = who.ip.and_then(ip);
            e.session = who.session.map(text);
        }
        e.into()
    }

    /// `authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=u rhost=ip [user=u]`.
    fn pam(&self, msg: &[u8]) -> Parsed {
        if !msg.starts_with(b"authentication failure;") {
            return Parsed::Irrelevant;
        }
        let mut e = self.event(EventKind::Auth);
        e.protocol = None;
        e.result = Some(Outcome::Fail);
        e.passdb = Some("pam".into());
        let (mut ruser, mut user) = (None, None);
        for token in msg.split(|&b| b == b' ') {
            if let Some(v) = token.strip_prefix(b"rhost=") {
                e.ip = ip(v);
            } else if let Some(v) = token.strip_prefix(b"ruser=") {
                ruser = Some(v).filter(|v| !v.is_empty());
            } else if let Some(v) = token.strip_prefix(b"user=") {
                user = Some(v).filter(|v| !v.is_empty());
            }
        }
        e.user = user.or(ruser).map(text);
        e.reason = Some("authentication failure".into());
        e.into()
    }
}

/// The arguments of a passdb prefix: `user,ip[,master][,<session>]`.
#[derive(Debug, Default)]
struct PassdbArgs<'a> {
    user: Option<&'a [u8]>,
    ip: Option<&'a [u8]>,
    session: Option<&'a [u8]>,
    master: bool,
}

impl<'a> PassdbArgs<'a> {
    fn read(args: &'a [u8]) -> PassdbArgs<'a> {
        let mut a = PassdbArgs::default();
        let mut end = args.len();
        // From the right: <session>, master, ip; the user is what remains (it may hold commas).
        let mut fields = 0;
        while let Some(comma) = args[..end].iter().rposition(|&b| b == b',') {
            let part = &args[comma + 1..end];
            if a.session.is_none() && a.ip.is_none() && part.starts_with(b"<") {
                a.session = Some(
                    part.strip_prefix(b"<")
                        .unwrap_or(part)
                        .strip_suffix(b">")
                        .unwrap_or(part),
                );
            } else if a.ip.is_none() && part == b"master" {
                a.master = true;
            } else if a.ip.is_none() && (part.is_empty() || ip(part).is_some()) {
                a.ip = Some(part);
                end = comma;
                break;
            } else if a.session.is_none()
                && a.ip.is_none()
                && fields == 0
                && ip(part).is_none()
                && !part.contains(&b'@')
            {
                // 2.4 may write the session without brackets.
                a.session = Some(part);
            } else {
                break;
            }
            fields += 1;
            end = comma;
        }
        if a.ip.is_none() {
            // No address found: the first comma separates the user from the rest.
            if let Some(comma) = args.iter().position(|&b| b == b',') {
                a.user = Some(&args[..comma]);
                a.ip = Some(&args[comma + 1..end.max(comma + 1)]);
                return a.non_empty();
            }
        }
        a.user = Some(&args[..end]);
        a.non_empty()
    }

    fn non_empty(mut self) -> Self {
        self.user = self.user.filter(|u| !u.is_empty());
        self.ip = self.ip.filter(|u| !u.is_empty());
        self
    }
}

/// `... : 2 Time(s)` (log summarisers) removed.
fn strip_times(r: &[u8]) -> &[u8] {
    match r.windows(2).rposition(|w| w == b": ") {
        Some(at) if r.ends_with(b"Time(s)") => &r[..at],
        _ => r,
    }
}

/// A logout line of a mail process: fills the counters and returns the kind.
fn logout(e: &mut LogEvent, msg: &[u8]) -> Option<EventKind> {
    let counters = find(msg, b" in=")
        .or_else(|| find(msg, b"in=").filter(|&i| i == 0))
        .or_else(|| find(msg, b"top="))
        .or_else(|| find(msg, b"retr="));
    let ends = msg.starts_with(b"Disconnected")
        || msg.starts_with(b"Logged out")
        || msg.starts_with(b"Connection closed");
    if counters.is_none() && !ends {
        return None;
    }
    let (head, tail) = match counters {
        Some(at) => (&msg[..at], &msg[at..]),
        None => (msg, &b""[..]),
    };
    let head = head.strip_prefix(b"Disconnected: ").unwrap_or(head);
    let head = head.strip_suffix(b" ").unwrap_or(head);
    if !head.is_empty() {
        e.reason = Some(text(head));
    }
    let (mut top_bytes, mut retr_bytes) = (None::<u64>, None::<u64>);
    for token in tail.split(|&b| b == b' ') {
        let token = token.strip_suffix(b",").unwrap_or(token);
        let Some(eq) = token.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&token[..eq], &token[eq + 1..]);
        let pair = |v: &[u8]| -> (Option<u64>, Option<u64>) {
            match v.iter().position(|&b| b == b'/') {
                Some(s) => (number(&v[..s]), number(&v[s + 1..])),
                None => (number(v), None),
            }
        };
        match key {
            b"in" => e.bytes_in = number(value),
            b"out" => e.bytes_out = number(value),
            b"deleted" => e.deleted = number(value),
            b"expunged" => e.expunged = number(value),
            b"body_count" => e.fetched = number(value),
            b"top" => top_bytes = pair(value).1,
            b"retr" => {
                let (count, bytes) = pair(value);
                e.fetched = count;
                retr_bytes = bytes;
            }
            b"del" => e.deleted = pair(value).0,
            _ => {}
        }
    }
    if top_bytes.is_some() || retr_bytes.is_some() {
        e.bytes_out = Some(top_bytes.unwrap_or(0) + retr_bytes.unwrap_or(0));
    }
    Some(EventKind::Logout)
}

/// A `mail_log` plugin line (or an LMTP / LDA delivery): fills the event and says
/// whether it was one.
fn mailbox_action(e: &mut LogEvent, msg: &[u8]) -> bool {
    // `Mailbox created: INBOX`, `Mailbox renamed: Old -> New`, `Mailbox deleted: Tmp`
    for (lead, action) in [
        (&b"Mailbox created: "[..], "mailbox_create"),
        (b"Mailbox deleted: ", "mailbox_delete"),
        (b"Mailbox renamed: ", "mailbox_rename"),
    ] {
        if let Some(name) = msg.strip_prefix(lead) {
            e.action = Some(action.into());
            match find(name, b" -> ") {
                Some(at) => {
                    e.from_mailbox = Some(text(&name[..at]));
                    e.mailbox = Some(text(&name[at + 4..]));
                }
                None => e.mailbox = Some(text(name)),
            }
            return true;
        }
    }
    // LMTP / LDA: `msgid=<..>: saved mail to INBOX`
    if let Some(at) = find(msg, b": saved mail to ") {
        e.action = Some("deliver".into());
        e.mailbox = Some(text(strip_quotes(&msg[at + 16..])));
        if let Some(id) = msg[..at].strip_prefix(b"msgid=") {
            e.message_id = Some(text(
                id.strip_prefix(b"<")
                    .unwrap_or(id)
                    .strip_suffix(b">")
                    .unwrap_or(id),
            ));
        }
        return true;
    }
    // `save: box=.., uid=.., msgid=<..>, size=..`, `copy from INBOX: box=..`
    let Some(colon) = find(msg, b": ") else {
        return false;
    };
    let (event, list) = (&msg[..colon], &msg[colon + 2..]);
    let (action, from) = match event {
        b"save" | b"delete" | b"undelete" | b"expunge" | b"flag_change" | b"copy" | b"fetch"
        | b"mailbox_create" | b"mailbox_delete" | b"mailbox_rename" => (event, None),
        _ => match event.strip_prefix(b"copy from ") {
            Some(from) => (&b"copy"[..], Some(from)),
            None => return false,
        },
    };
    let p = Pairs::read(list);
    e.action = Some(text(action));
    e.from_mailbox = from.map(|f| text(strip_quotes(f)));
    e.mailbox = p.mailbox.map(text);
    e.uid = p.uid.and_then(number);
    e.message_id = p.msgid.map(text);
    e.size = p.size.and_then(number);
    true
}

fn strip_quotes(s: &[u8]) -> &[u8] {
    s.strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
        .unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::tests::ctx;
    use crate::sources::{Format, parse_line};
    use std::net::IpAddr;

    fn one(line: &str) -> LogEvent {
        match parse_line(Format::Dovecot, line.as_bytes(), &ctx()) {
            Parsed::Event(e) => *e,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn successful_login() {
        let e = one(
            "Nov 28 04:50:50 imap-login: Info: Login: user=<alice>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=26682, secured, session=<yYWz605hnpB/AAAB>",
        );
        assert_eq!((e.kind, e.result), (EventKind::Auth, Some(Outcome::Ok)));
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.mech.as_deref(), Some("PLAIN"));
        assert_eq!(e.protocol, Some(Protocol::Imap));
        assert_eq!(e.pid, Some(26682));
        assert_eq!(e.session.as_deref(), Some("yYWz605hnpB/AAAB"));
        assert_eq!(e.tls, None);
        let e = one(
            "2026-11-28T03:21:17.123456+00:00 mx1 dovecot[1]: pop3-login: Login: user=<bob@example.org>, method=LOGIN, rip=2001:db8::5, lip=2001:db8::1, mpid=77, TLS, session=<abc>",
        );
        assert_eq!(e.protocol, Some(Protocol::Pop3));
        assert_eq!(e.ip, ip("2001:db8::5"));
        assert_eq!(e.tls, Some(true));
        let e = one(
            "Nov 28 04:50:58 imap-login: Info: Login: user=<alice*admin>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2, mpid=1, session=<s>",
        );
        assert_eq!(e.user.as_deref(), Some("alice"));
        assert_eq!(e.admin.as_deref(), Some("admin"));
    }

    #[test]
    fn failure_summaries() {
        let e = one(
            "Nov 28 04:51:10 imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 3 attempts in 6 secs): user=<bob>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, secured, session=<69CK7E5hNqR/AAAB>",
        );
        assert_eq!((e.kind, e.result), (EventKind::Auth, Some(Outcome::Fail)));
        assert_eq!(e.attempts, Some(3));
        assert_eq!(e.user.as_deref(), Some("bob"));
        let e = one(
            "Apr 22 12:20:30 mail dovecot: pop3-login: Aborted login (auth failed, 1 attempts in 17 secs): user=<admin>, method=PLAIN, rip=37.203.214.104, lip=81.164.24.87, session=<eGg3gk0UWgAly9Zo>",
        );
        assert_eq!(e.ip, ip("37.203.214.104"));
        let e = one(
            "Jun 14 00:48:21 platypus dovecot: imap-login: Disconnected (auth failed, 1 attempts): method=PLAIN, rip=59.167.242.100, lip=113.212.99.194, TLS: Disconnected",
        );
        assert_eq!(e.user, None);
        assert_eq!(e.attempts, Some(1));
        assert_eq!(e.tls, Some(true));
        let e = one(
            "2026-11-28 10:00:00 imap-login: Info: Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed): user=<alice>, method=PLAIN, rip=192.0.2.9, lip=192.0.2.1, session=<x>",
        );
        assert_eq!(e.result, Some(Outcome::Fail));
        assert_eq!(e.ip, ip("192.0.2.9"));
        let e = one(
            "Nov 14 03:51:22 pop3-login: Info: Disconnected: Connection closed: read(size=988) failed: Connection reset by peer (auth failed, 1 attempts in 2 secs): user=<shop@example.com>, method=PLAIN, rip=87.120.113.189, lip=1.2.3.4, session=<ZfpthtYmgKpXeHG9>",
        );
        assert_eq!(e.user.as_deref(), Some("shop@example.com"));
    }

    #[test]
    fn other_login_summaries() {
        let e = one(
            "Nov 28 04:51:10 imap-login: Info: Disconnected: Aborted login by logging out (no auth attempts in 0 secs): user=<>, rip=127.0.0.1, lip=127.0.0.1, secured, session=<8jLm7E5hToB/AAAB>",
        );
        assert_eq!(e.kind, EventKind::Disconnection);
        assert_eq!(e.user, None);
        let e = one(
            "Dec 12 11:19:11 dunnart dovecot: pop3-login: Aborted login (tried to use disabled plaintext auth): rip=190.210.136.21, lip=113.212.99.193",
        );
        assert_eq!(
            (e.kind, e.action.as_deref()),
            (EventKind::Rejection, Some("plaintext"))
        );
    }

    #[test]
    fn passdb_failures() {
        let e = one(
            "Nov 28 04:50:50 auth: Info: passwd-file(alice,127.0.0.1,<NFy0605hqpB/AAAB>): Password mismatch",
        );
        assert_eq!((e.kind, e.result), (EventKind::Auth, Some(Outcome::Fail)));
        assert_eq!(e.passdb.as_deref(), Some("passwd-file"));
        assert_eq!(e.session.as_deref(), Some("NFy0605hqpB/AAAB"));
        assert_eq!(e.reason.as_deref(), Some("password mismatch"));
        assert_eq!(e.protocol, None);
        let e = one("Nov 28 04:52:36 auth: Info: passwd-file(mallory,127.0.0.1): unknown user");
        assert_eq!(e.user.as_deref(), Some("mallory"));
        assert_eq!(e.session, None);
        let e = one("Nov 28 04:52:38 auth: Info: passwd-file(alice,::1): Password mismatch");
        assert_eq!(e.ip, ip("::1"));
        let e = one(
            "2013-08-11 03:56:40 auth-worker(default): Info: pam(username,1.2.3.4): pam_authenticate() failed: Authentication failure (password mismatch?)",
        );
        assert_eq!(e.passdb.as_deref(), Some("pam"));
        assert_eq!(e.reason.as_deref(), Some("password mismatch"));
        let e = one(
            "Jul 02 13:49:32 hostname dovecot[442]: dovecot: auth(default): pam(account@example.com,200.76.17.206): pam_authenticate() failed: User not known to the underlying authentication module: 2 Time(s)",
        );
        assert_eq!(e.user.as_deref(), Some("account@example.com"));
        assert_eq!(
            e.reason.as_deref(),
            Some("User not known to the underlying authentication module")
        );
        let e = one(
            "Nov 28 04:50:58 auth: Info: passwd-file(admin,127.0.0.1,master,<8iIv7E5h0pB/AAAB>): Password mismatch",
        );
        assert_eq!(e.admin.as_deref(), Some("admin"));
        let e = one(
            "Nov 28 05:00:00 auth-worker(4242): Info: sql(carol,2001:db8::9,<sEss>): Password mismatch",
        );
        assert_eq!(e.ip, ip("2001:db8::9"));
        let e = one("Nov 28 05:00:00 auth: Info: ldap(dave,192.0.2.4,<sEss>): invalid credentials");
        assert_eq!(e.reason.as_deref(), Some("invalid credentials"));
        let e =
            one("Nov 28 05:00:00 auth: passwd-file(erin,192.0.2.5,<s24>): Info: Password mismatch");
        assert_eq!(e.user.as_deref(), Some("erin"));
    }

    #[test]
    fn pam_module_lines() {
        let e = one(
            "Sep 16 06:51:00 host dovecot-auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=rhost=1.2.3.4 rhost=192.0.43.10",
        );
        assert_eq!(e.ip, ip("192.0.43.10"));
        assert_eq!(e.user.as_deref(), Some("rhost=1.2.3.4"));
        let e = one(
            "Apr 19 05:22:20 vm5 auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=informix rhost=80.255.3.104",
        );
        assert_eq!(e.user.as_deref(), Some("informix"));
    }

    #[test]
    fn policy_and_master() {
        let e = one(
            "Nov 28 05:00:00 auth: Info: policy(alice,192.0.2.1,<s>): Authentication failure due to policy server refusal: blocked",
        );
        assert_eq!(e.result, Some(Outcome::Fail));
        assert_eq!(e.passdb.as_deref(), Some("policy"));
        assert_eq!(
            parse_line(Format::Dovecot, b"Nov 28 05:00:00 auth: Error: policy(alice,192.0.2.1,<s>): Policy server HTTP error: 500", &ctx()),
            Parsed::Irrelevant
        );
        let e = one("Nov 28 04:50:58 auth: Info: Master user logging in as alice");
        assert_eq!(
            (e.kind, e.user.as_deref()),
            (EventKind::AdminAction, Some("alice"))
        );
        assert_eq!(e.action.as_deref(), Some("master_login"));
    }

    #[test]
    fn logouts() {
        let e = one(
            "Nov 28 04:50:50 imap(alice)<26682><yYWz605hnpB/AAAB>: Info: Disconnected: Logged out in=489 out=1669 deleted=1 expunged=1 trashed=0 hdr_count=0 hdr_bytes=0 body_count=1 body_bytes=111",
        );
        assert_eq!(e.kind, EventKind::Logout);
        assert_eq!(
            (e.bytes_in, e.bytes_out, e.fetched, e.deleted, e.expunged),
            (Some(489), Some(1669), Some(1), Some(1), Some(1))
        );
        assert_eq!(e.pid, Some(26682));
        assert_eq!(e.session.as_deref(), Some("yYWz605hnpB/AAAB"));
        assert_eq!(e.reason.as_deref(), Some("Logged out"));
        let e = one(
            "Nov 28 04:51:00 pop3(alice)<26695><yWhN7E5hmrJ/AAAB>: Info: Disconnected: Logged out top=0/0, retr=1/127, del=1/1, size=111",
        );
        assert_eq!(
            (e.fetched, e.bytes_out, e.deleted),
            (Some(1), Some(127), Some(1))
        );
        assert_eq!(e.size, None);
        let e = one(
            "Dec 21 22:05:14 mail dovecot: imap(me@example.com)<373>: Logged out in=146 out=2974",
        );
        assert_eq!(e.pid, Some(373));
        assert_eq!(e.session, None);
    }

    #[test]
    fn mailbox_actions() {
        let e = one(
            "Nov 28 04:50:50 imap(alice)<26682><yYWz605hnpB/AAAB>: Info: save: box=INBOX, uid=1, msgid=<gold-1@example.test>, size=105, from=carol@example.test, subject=golden",
        );
        assert_eq!(e.kind, EventKind::MailboxAction);
        assert_eq!(e.action.as_deref(), Some("save"));
        assert_eq!(
            (e.mailbox.as_deref(), e.uid, e.size),
            (Some("INBOX"), Some(1), Some(105))
        );
        assert_eq!(e.message_id.as_deref(), Some("gold-1@example.test"));
        let e = one(
            "Nov 28 04:50:50 imap(alice)<26682><yYWz605hnpB/AAAB>: Info: copy from INBOX: box=Archive, uid=1, msgid=<gold-1@example.test>, size=105",
        );
        assert_eq!(
            (e.action.as_deref(), e.from_mailbox.as_deref()),
            (Some("copy"), Some("INBOX"))
        );
        let e = one(
            "Nov 28 04:50:50 imap(alice)<26682><yYWz605hnpB/AAAB>: Info: Mailbox renamed: Archive -> Old",
        );
        assert_eq!(
            (e.from_mailbox.as_deref(), e.mailbox.as_deref()),
            (Some("Archive"), Some("Old"))
        );
        let e = one(
            "Nov 28 05:00:00 lmtp(alice)<1><s>: Info: msgid=<m1@example.org>: saved mail to INBOX",
        );
        assert_eq!(
            (e.action.as_deref(), e.protocol),
            (Some("deliver"), Some(Protocol::Lmtp))
        );
    }

    #[test]
    fn irrelevant_and_foreign() {
        assert_eq!(parse_line(Format::Dovecot, b"Nov 28 04:50:40 master: Info: Dovecot v2.3.19.1 (9b53102964) starting up for imap, pop3", &ctx()), Parsed::Irrelevant);
        assert_eq!(
            parse_line(
                Format::Dovecot,
                b"Nov 28 04:50:40 imap-login: Debug: SSL: where=0x10",
                &ctx()
            ),
            Parsed::Irrelevant
        );
        assert_eq!(
            parse_line(
                Format::Dovecot,
                b"Nov 28 04:50:40 mx kernel: eth0 up",
                &ctx()
            ),
            Parsed::Unrecognised
        );
        assert!(matches!(
            parse_line(Format::Dovecot, b"Nov 28 04:50:40 auth: Info: checkpassword(alice,192.0.2.1): login failed in a new way", &ctx()),
            Parsed::DeadLetter(_)
        ));
    }

    #[test]
    fn passdb_args() {
        let a = PassdbArgs::read(b"alice,127.0.0.1,<sess>");
        assert_eq!(
            (a.user, a.ip, a.session, a.master),
            (
                Some(&b"alice"[..]),
                Some(&b"127.0.0.1"[..]),
                Some(&b"sess"[..]),
                false
            )
        );
        let a = PassdbArgs::read(b"a,b@x,::1,master,<s>");
        assert_eq!(
            (a.user, a.ip, a.master),
            (Some(&b"a,b@x"[..]), Some(&b"::1"[..]), true)
        );
        let a = PassdbArgs::read(b"alice,");
        assert_eq!((a.user, a.ip), (Some(&b"alice"[..]), None));
        let a = PassdbArgs::read(b"alice");
        assert_eq!((a.user, a.ip), (Some(&b"alice"[..]), None));
    }
}
