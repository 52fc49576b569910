//! Connection facts that Exim already knows, added to a request when the call does not
//! give them, so that no configuration needs more than 7 arguments.
//!
//! Each fact is one Exim variable, read with `expand_string` and copied at once. A fact
//! the call already gives is left alone; an empty one (no TLS, no HELO yet) or a port of
//! `0` (no remote host) is not sent. Only keys that the verb's request uses are added:
//!
//! | verb | facts |
//! |---|---|
//! | `auth` | `helo` `port` `local_port` `tls` `mech` |
//! | `mail` `rcpt` `data` | `helo` `port` `tls` |
//! | `connect` | `helo` `port` `local_port` |
//! | `login` `ping` | none (`login` describes another service's session) |
//!
//! `mech` is the SASL mechanism the client named in its `AUTH` command (the second word
//! of `$smtp_command`, only when that command is `AUTH`; nothing else of it is kept, as
//! the rest may hold credentials). Exim 4.96 has no expansion variable for the name of
//! the running authenticator (it is a C global that is not exported), so `authenticator=`
//! is only sent when the configuration gives it, e.g. `{authenticator=plain_server}`.
//!
//! Values are cut to a few hundred bytes: a client must not be able to make a request
//! too long to send (and so skip the oracle) with, say, a huge HELO name.

use crate::args::Pairs;
use crate::exim::Exim;

/// One connection fact: where Exim keeps it and how it is cleaned up.
struct Fact {
    /// The request key.
    key: &'static str,
    /// The Exim expansion that gives the value.
    expansion: &'static str,
    /// At most this many bytes of the expansion are read.
    max_bytes: usize,
    /// Turns the expansion into the value sent, or `None` to send nothing.
    clean: fn(&str) -> Option<String>,
}

/// The client's HELO / EHLO name.
const HELO: Fact = Fact {
    key: "helo",
    expansion: "$sender_helo_name",
    max_bytes: 255,
    clean: non_empty,
};

/// The client's TCP port.
const PORT: Fact = Fact {
    key: "port",
    expansion: "$sender_host_port",
    max_bytes: 8,
    clean: port,
};

/// The local port the client connected to (25, 465, 587, ...).
const LOCAL_PORT: Fact = Fact {
    key: "local_port",
    expansion: "$received_port",
    max_bytes: 8,
    clean: port,
};

/// The TLS cipher suite of the incoming connection.
const TLS: Fact = Fact {
    key: "tls",
    expansion: "$tls_in_cipher",
    max_bytes: 128,
    clean: non_empty,
};

/// The SASL mechanism named in the current `AUTH` command.
const MECH: Fact = Fact {
    key: "mech",
    expansion: "$smtp_command",
    max_bytes: 64,
    clean: mech_of_auth_command,
};

/// The facts that a request of `verb` may carry.
fn facts_for(verb: &str) -> &'static [Fact] {
    match verb {
        "auth" => &[HELO, PORT, LOCAL_PORT, TLS, MECH],
        "mail" | "rcpt" | "data" => &[HELO, PORT, TLS],
        "connect" => &[HELO, PORT, LOCAL_PORT],
        _ => &[],
    }
}

/// Adds to `pairs` the facts of `verb` that the call did not give and Exim knows.
pub fn add_missing(verb: &str, pairs: &mut Pairs, exim: &dyn Exim) {
    for fact in facts_for(verb) {
        if pairs.contains(fact.key) {
            continue;
        }
        let value = exim
            .expand(fact.expansion, fact.max_bytes)
            .and_then(|v| (fact.clean)(&v));
        if let Some(value) = value {
            // Cannot fail: the key is absent, checked above.
            let _ = pairs.push(fact.key, value);
        }
    }
}

/// The value unless it is empty.
fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

/// A port number other than 0 (Exim's "no remote host").
fn port(value: &str) -> Option<String> {
    match value.parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(value.to_string()),
    }
}

/// The mechanism of an `AUTH <mech> [initial response]` command, uppercased.
fn mech_of_auth_command(command: &str) -> Option<String> {
    let mut words = command.split_ascii_whitespace();
    if !words.next()?.eq_ignore_ascii_case("auth") {
        return None;
    }
    let mech = words.next()?;
    // RFC 4422: up to 20 characters of A-Z, 0-9, '-' and '_'.
    let valid = mech.len() <= 20
        && mech
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then(|| mech.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exim::FakeExim;

    fn exim() -> FakeExim {
        FakeExim::with(&[
            ("$sender_helo_name", "client.example"),
            ("$sender_host_port", "40123"),
            ("$received_port", "587"),
            ("$tls_in_cipher", ""),
            ("$smtp_command", "AUTH plain AGFsaWNlAHNlY3JldA=="),
        ])
    }

    fn keys(pairs: &Pairs) -> Vec<(&str, &str)> {
        pairs
            .iter()
            .map(|(k, v)| (k, std::str::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn auth_gets_every_known_fact_but_empty_ones() {
        let mut pairs = Pairs::default();
        pairs.push("user", "alice").unwrap();
        add_missing("auth", &mut pairs, &exim());
        assert_eq!(
            keys(&pairs),
            [
                ("user", "alice"),
                ("helo", "client.example"),
                ("port", "40123"),
                ("local_port", "587"),
                ("mech", "PLAIN")
            ]
        );
    }

    #[test]
    fn facts_given_by_the_call_win() {
        let mut pairs = Pairs::default();
        pairs.push("helo", "given").unwrap();
        add_missing("rcpt", &mut pairs, &exim());
        assert_eq!(
            keys(&pairs),
            [("helo", "given"), ("port", "40123")],
            "rcpt carries no local_port or mech"
        );
    }

    #[test]
    fn nothing_is_added_outside_exim_or_for_other_verbs() {
        let mut pairs = Pairs::default();
        add_missing("auth", &mut pairs, &FakeExim::default());
        assert_eq!(pairs.len(), 0);
        add_missing("login", &mut pairs, &exim());
        add_missing("ping", &mut pairs, &exim());
        assert_eq!(pairs.len(), 0);
    }

    #[test]
    fn mech_comes_only_from_an_auth_command() {
        assert_eq!(mech_of_auth_command("AUTH LOGIN"), Some("LOGIN".into()));
        assert_eq!(
            mech_of_auth_command("auth cram-md5 "),
            Some("CRAM-MD5".into())
        );
        assert_eq!(mech_of_auth_command("MAIL FROM:<a@b>"), None);
        assert_eq!(mech_of_auth_command("AUTH"), None);
        assert_eq!(mech_of_auth_command("AUTH PL\"AIN"), None);
        assert_eq!(mech_of_auth_command(""), None);
    }

    #[test]
    fn ports_are_numbers_other_than_zero() {
        assert_eq!(port("0"), None);
        assert_eq!(port(""), None);
        assert_eq!(port("x"), None);
        assert_eq!(port("25"), Some("25".into()));
    }
}
