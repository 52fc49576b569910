//! One timeline per account: recent logins (every protocol), messages sent, deliveries
//! and bounces of those messages, IMAP/POP sessions with their byte counts.
//!
//! Bounded: the newest [`TIMELINE_LEN`] entries are kept. A Dovecot logout is merged into
//! the login with the same session id, so a session reads as one entry.

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
    /// Adds an entry, dropping the oldest past [`TIMELINE_LEN`].
    pub fn push(&mut self, entry: Entry) {
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
}
