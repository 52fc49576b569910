//! One timeline per account: recent logins (every protocol), messages sent, deliveries
//! and bounces of those messages, IMAP/POP sessions with their byte counts.
//!
//! Bounded: the newest [`TIMELINE_LEN`] entries are kept. A Dovecot logout is merged into
//! the login with the same session id, so a session reads as one entry.
//!
//! A login keeps how it was made (mechanism, authenticator, ports, TLS, client name) in a
//! [`LoginDetail`], boxed and only when any of it is known, so an entry costs one pointer
//! more than without it; its texts are cut to a few dozen bytes (a client chooses its
//! HELO name) and the usual mechanism names are shared, like the protocol names.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

use super::Secs;

/// The protocol of a log line that does not name one.
pub const UNKNOWN_PROTOCOL: &str = "unknown";
use crate::protocol::Outcome;

/// How many entries an account's timeline keeps.
pub const TIMELINE_LEN: usize = 32;

/// `protocol` as the `Arc<str>` a login entry keeps: the names Exim and Dovecot use
/// are shared (no allocation per login, and not one per entry of every account's
/// timeline); any other name gets its own.
pub fn protocol_arc(protocol: &str) -> Arc<str> {
    static KNOWN: LazyLock<[Arc<str>; 8]> = LazyLock::new(|| {
        [
            "smtp",
            "imap",
            "pop3",
            "submission",
            "lmtp",
            "managesieve",
            "sieve",
            UNKNOWN_PROTOCOL,
        ]
        .map(Arc::from)
    });
    KNOWN
        .iter()
        .find(|k| ***k == *protocol)
        .cloned()
        .unwrap_or_else(|| Arc::from(protocol))
}

/// `mech` as the `Arc<str>` a login's detail keeps: the usual SASL mechanisms are shared
/// (no allocation per login); any other name gets its own, cut to [`MAX_DETAIL_BYTES`].
pub fn mech_arc(mech: &str) -> Arc<str> {
    static KNOWN: LazyLock<[Arc<str>; 10]> = LazyLock::new(|| {
        [
            "PLAIN",
            "LOGIN",
            "CRAM-MD5",
            "DIGEST-MD5",
            "SCRAM-SHA-1",
            "SCRAM-SHA-256",
            "XOAUTH2",
            "OAUTHBEARER",
            "EXTERNAL",
            "GSSAPI",
        ]
        .map(Arc::from)
    });
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(mech))
        .cloned()
        .unwrap_or_else(|| bounded_arc(mech, MAX_DETAIL_BYTES))
}

/// The longest mechanism or authenticator name a login keeps, in bytes.
pub const MAX_DETAIL_BYTES: usize = 64;

/// The longest client name (HELO, IMAP ID) or TLS cipher a login keeps, in bytes.
pub const MAX_CLIENT_BYTES: usize = 128;

/// `text` cut to at most `max` bytes (at a character boundary), shared.
pub fn bounded_arc(text: &str, max: usize) -> Arc<str> {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Arc::from(&text[..end])
}

/// How a login attempt was made, besides who, from where and when: what the request or
/// the log line said about the connection. Every field is optional (a `${readsocket}`
/// request says little, the library and Dovecot's policy request say most).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LoginDetail {
    /// The SASL mechanism (`PLAIN`, `LOGIN`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mech: Option<Arc<str>>,
    /// Exim's authenticator: the name of its driver instance (`access_plain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticator: Option<Arc<str>>,
    /// The client's own (source) port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The server port the client connected to (25, 465, 587, 993, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// Whether the connection was encrypted (TLS), when the source says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<bool>,
    /// The TLS cipher suite, when the source names it (Exim's `$tls_in_cipher`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<Arc<str>>,
    /// The client's name: the SMTP HELO / EHLO name, Dovecot's client id (IMAP `ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<Arc<str>>,
}

impl LoginDetail {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == LoginDetail::default()
    }

    /// The detail to keep: `None` when nothing is known.
    pub fn boxed(self) -> Option<Box<LoginDetail>> {
        (!self.is_empty()).then(|| Box::new(self))
    }

    /// Takes `prev`'s copy of each text equal to its own (the same client's next login
    /// names the same authenticator, cipher and HELO name), so repeated texts are kept
    /// once per account rather than once per login.
    pub fn share_texts_with(&mut self, prev: &LoginDetail) {
        fn share(mine: &mut Option<Arc<str>>, theirs: &Option<Arc<str>>) {
            if let (Some(m), Some(t)) = (mine.as_mut(), theirs)
                && !Arc::ptr_eq(m, t)
                && **m == **t
            {
                *m = t.clone();
            }
        }
        share(&mut self.mech, &prev.mech);
        share(&mut self.authenticator, &prev.authenticator);
        share(&mut self.cipher, &prev.cipher);
        share(&mut self.client, &prev.client);
    }

    /// Fills what is unknown here from `other` (the log line of an attempt the live path
    /// reported, or the other way round); what is known stays.
    pub fn complete_from(&mut self, other: &LoginDetail) {
        fn fill<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        fill(&mut self.mech, &other.mech);
        fill(&mut self.authenticator, &other.authenticator);
        fill(&mut self.port, &other.port);
        fill(&mut self.local_port, &other.local_port);
        fill(&mut self.tls, &other.tls);
        fill(&mut self.cipher, &other.cipher);
        fill(&mut self.client, &other.client);
        if self.cipher.is_some() {
            self.tls = Some(true);
        }
    }
}

/// Where an entry was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Exim or Dovecot asked the oracle.
    Live,
    /// A log line.
    Log,
}

/// One thing an account did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Entry {
    /// A login attempt.
    Login {
        /// When.
        time: Secs,
        /// `smtp`, `imap`, `pop3`, ...
        protocol: Arc<str>,
        /// From where.
        ip: Option<IpAddr>,
        /// Right or wrong password.
        result: Outcome,
        /// Dovecot's session id.
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<Arc<str>>,
        /// When the session ended (merged from the logout).
        #[serde(skip_serializing_if = "Option::is_none")]
        logout: Option<Secs>,
        /// Bytes from the client in the session.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes_in: Option<u64>,
        /// Bytes to the client in the session.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes_out: Option<u64>,
        /// Live or from a log.
        origin: Origin,
        /// How the attempt was made, when anything of it is known.
        #[serde(flatten)]
        detail: Option<Box<LoginDetail>>,
    },
    /// A message the account sent.
    Sent {
        /// When.
        time: Secs,
        /// Exim's message id.
        #[serde(skip_serializing_if = "Option::is_none")]
        msgid: Option<Arc<str>>,
        /// How many recipients.
        rcpts: u64,
        /// From where.
        ip: Option<IpAddr>,
        /// Live or from a log.
        origin: Origin,
    },
    /// A delivery (or bounce, or deferral) of a message the account sent.
    Delivery {
        /// When.
        time: Secs,
        /// Exim's message id.
        msgid: Arc<str>,
        /// The recipient.
        rcpt: Option<Arc<str>>,
        /// `delivered`, `deferred` or `bounced`.
        outcome: &'static str,
    },
    /// A session whose login was not seen (the oracle started later), from its logout.
    Session {
        /// When it ended.
        time: Secs,
        /// `imap`, `pop3`, ...
        protocol: Arc<str>,
        /// Dovecot's session id.
        session: Option<Arc<str>>,
        /// Bytes from the client.
        bytes_in: Option<u64>,
        /// Bytes to the client.
        bytes_out: Option<u64>,
    },
}

impl Entry {
    fn time(&self) -> Secs {
        match self {
            Entry::Login { time, .. }
            | Entry::Sent { time, .. }
            | Entry::Delivery { time, .. }
            | Entry::Session { time, .. } => *time,
        }
    }
}

/// An account's recent activity, oldest first.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    entries: VecDeque<Entry>,
}

impl Timeline {
    /// Adds an entry, dropping the oldest past [`TIMELINE_LEN`]. A login's texts equal
    /// to those of the newest login with details share its copies.
    pub fn push(&mut self, mut entry: Entry) {
        if let Entry::Login {
            detail: Some(d), ..
        } = &mut entry
            && let Some(prev) = self.entries.iter().rev().find_map(|e| match e {
                Entry::Login {
                    detail: Some(p), ..
                } => Some(p),
                _ => None,
            })
        {
            d.share_texts_with(prev);
        }
        if self.entries.len() >= TIMELINE_LEN {
            self.entries.pop_front();
        }
        // Log lines may arrive a little out of order with live events: keep time order.
        let at = self
            .entries
            .iter()
            .rposition(|e| e.time() <= entry.time())
            .map_or(0, |i| i + 1);
        self.entries.insert(at, entry);
    }

    /// Merges a logout into the login of the same session; returns false when no such
    /// login is in the timeline.
    pub fn end_session(
        &mut self,
        session: &str,
        at: Secs,
        bytes: (Option<u64>, Option<u64>),
    ) -> bool {
        for e in self.entries.iter_mut().rev() {
            if let Entry::Login {
                session: Some(s),
                logout,
                bytes_in,
                bytes_out,
                ..
            } = e
                && &**s == session
            {
                *logout = Some(at);
                *bytes_in = bytes.0;
                *bytes_out = bytes.1;
                return true;
            }
        }
        false
    }

    /// Completes the newest login of `result` from `ip` within `window` seconds of `at`
    /// with what `detail` knows and the entry does not (a log line's authenticator for
    /// a live attempt, a live request's TLS cipher for a log line's attempt); returns
    /// false when there is no such login.
    pub fn complete_login(
        &mut self,
        at: Secs,
        ip: Option<IpAddr>,
        result: Outcome,
        window: Secs,
        detail: &LoginDetail,
    ) -> bool {
        for e in self.entries.iter_mut().rev() {
            if let Entry::Login {
                time,
                ip: i,
                result: r,
                detail: d,
                ..
            } = e
                && *i == ip
                && *r == result
                && (*time - at).abs() <= window
            {
                match d {
                    Some(d) => d.complete_from(detail),
                    None => *d = detail.clone().boxed(),
                }
                return true;
            }
        }
        false
    }

    /// Names the protocol of a session's login entries logged without one.
    pub fn name_session_protocol(&mut self, session: &str, protocol: &'static str) {
        for e in self.entries.iter_mut() {
            if let Entry::Login {
                session: Some(s),
                protocol: p,
                ..
            } = e
                && &**s == session
                && &**p == UNKNOWN_PROTOCOL
            {
                *p = protocol_arc(protocol);
            }
        }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// The entries for changing, newest first.
    pub fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.entries.iter_mut().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_protocols_share_one_name() {
        assert!(Arc::ptr_eq(&protocol_arc("imap"), &protocol_arc("imap")));
        assert!(!Arc::ptr_eq(
            &protocol_arc("x-other"),
            &protocol_arc("x-other")
        ));
        assert_eq!(&*protocol_arc("x-other"), "x-other");
    }

    fn login(time: Secs, session: Option<&str>) -> Entry {
        Entry::Login {
            time,
            protocol: "imap".into(),
            ip: None,
            result: Outcome::Ok,
            session: session.map(Arc::from),
            logout: None,
            bytes_in: None,
            bytes_out: None,
            origin: Origin::Log,
            detail: None,
        }
    }

    #[test]
    fn keeps_the_newest_in_time_order() {
        let mut t = Timeline::default();
        for i in 0..40 {
            t.push(login(i * 10, None));
        }
        t.push(login(395, None));
        let times: Vec<Secs> = t.entries().map(Entry::time).collect();
        assert_eq!(times.len(), TIMELINE_LEN);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
        assert_eq!(times.last(), Some(&395));
    }

    #[test]
    fn a_logout_completes_its_login() {
        let mut t = Timeline::default();
        t.push(login(10, Some("abc")));
        assert!(t.end_session("abc", 20, (Some(5), Some(500))));
        assert!(!t.end_session("zzz", 20, (None, None)));
        let Some(Entry::Login {
            logout, bytes_out, ..
        }) = t.entries().next()
        else {
            panic!("login expected");
        };
        assert_eq!((*logout, *bytes_out), (Some(20), Some(500)));
    }

    #[test]
    fn a_login_is_completed_by_its_other_report() {
        let mut t = Timeline::default();
        t.push(login(10, None));
        let from_log = LoginDetail {
            authenticator: Some("access_plain".into()),
            port: Some(40000),
            ..LoginDetail::default()
        };
        assert!(!t.complete_login(10, None, Outcome::Fail, 60, &from_log));
        assert!(!t.complete_login(100, None, Outcome::Ok, 60, &from_log));
        assert!(t.complete_login(30, None, Outcome::Ok, 60, &from_log));
        let live = LoginDetail {
            mech: Some(mech_arc("plain")),
            port: Some(1),
            cipher: Some("TLS1.3:TLS_AES_256_GCM_SHA384:256".into()),
            ..LoginDetail::default()
        };
        assert!(t.complete_login(30, None, Outcome::Ok, 60, &live));
        let Some(Entry::Login {
            detail: Some(d), ..
        }) = t.entries().next()
        else {
            panic!("a login with its detail expected");
        };
        assert_eq!(d.authenticator.as_deref(), Some("access_plain"));
        assert_eq!(d.port, Some(40000), "what was known stays");
        assert_eq!(d.mech.as_deref(), Some("PLAIN"));
        assert_eq!(d.tls, Some(true), "a cipher means TLS");
    }

    #[test]
    fn a_clients_repeated_texts_are_kept_once() {
        let mut t = Timeline::default();
        for (i, port) in [40000, 40001].into_iter().enumerate() {
            let mut e = login(i as Secs, None);
            if let Entry::Login { detail, .. } = &mut e {
                // Each login's texts are copies of their own, as a request gives them.
                *detail = LoginDetail {
                    authenticator: Some("access_plain".into()),
                    cipher: Some("TLS1.3:TLS_AES_256_GCM_SHA384:256".into()),
                    client: Some("laptop.example".into()),
                    port: Some(port),
                    ..LoginDetail::default()
                }
                .boxed();
            }
            t.push(e);
        }
        let details: Vec<&LoginDetail> = t
            .entries()
            .filter_map(|e| match e {
                Entry::Login {
                    detail: Some(d), ..
                } => Some(&**d),
                _ => None,
            })
            .collect();
        let [a, b] = details[..] else {
            panic!("two logins expected")
        };
        for (x, y) in [
            (&a.authenticator, &b.authenticator),
            (&a.cipher, &b.cipher),
            (&a.client, &b.client),
        ] {
            assert!(Arc::ptr_eq(x.as_ref().unwrap(), y.as_ref().unwrap()));
        }
        assert_eq!((a.port, b.port), (Some(40000), Some(40001)));
    }

    #[test]
    fn details_are_shared_or_cut() {
        assert!(Arc::ptr_eq(&mech_arc("PLAIN"), &mech_arc("plain")));
        assert_eq!(&*mech_arc("x-custom"), "x-custom");
        let long = "é".repeat(100);
        let cut = bounded_arc(&long, MAX_DETAIL_BYTES);
        assert!(cut.len() <= MAX_DETAIL_BYTES && long.starts_with(&*cut));
        assert!(LoginDetail::default().boxed().is_none());
    }

    /// A login's detail costs the entry one pointer; the entry stays within 128 bytes.
    #[test]
    fn an_entry_stays_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 128,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }
}
