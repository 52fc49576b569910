//! The e-mail sink and the "Was this you?" notice (`[notify_owner]`) through real Exim:
//! wrong passwords sent by swaks to a real Exim daemon trip a rule, the oracle hands the
//! e-mails to `sendmail`, which is Exim itself (a wrapper running `exim -C <mail
//! config> -odi`, immediate delivery), and Exim's `appendfile` transport writes them
//! into a mailbox file that the test reads back: the text body and the JSON attachment
//! of the alert, the grouped notification of the alerts that followed, one notice to
//! the account's owner however often the rule trips, and an account name with a CR/LF
//! that adds no header and gets no notice.
//!
//! The mail side is a small Exim configuration of the test's own (the shipped one
//! delivers to `/var/mail` and local users only): every recipient goes to one mbox
//! file, with `Envelope-to:` saying whom it was for. Exim keeps its privileges with
//! `-C` because the tests run as root.

use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use exim_access_e2e::mail::MailSystem;
use exim_access_e2e::{Dialogue, Exim, Oracle, Via, World};
use serde_json::Value;

/// How long anything may take to arrive.
const DEADLINE: Duration = Duration::from_secs(60);

/// Where the alert e-mails go.
const OPS: &str = "ops@example.org";

/// The address of the `[[sinks]] type = "email"` sink's sender.
const SENDER: &str = "oracle@mx.test.example";

/// An account name that would add a header if it reached one raw.
const HOSTILE: &[u8] = b"mallory\r\nBcc: victim@example.net";

fn toml_str(s: impl AsRef<str>) -> String {
    serde_json::to_string(s.as_ref()).unwrap()
}

/// What these tests read of the mailbox.
trait Mailbox {
    fn messages(&self) -> Vec<Mail>;
    fn wait(&self, what: &str, check: impl Fn(&[Mail]) -> bool) -> Vec<Mail>;
}

impl Mailbox for MailSystem {
    /// The messages delivered so far.
    fn messages(&self) -> Vec<Mail> {
        self.raw_messages().iter().map(|m| Mail::parse(m)).collect()
    }

    /// Waits (bounded) until `check` holds for the messages delivered; returns them.
    fn wait(&self, what: &str, check: impl Fn(&[Mail]) -> bool) -> Vec<Mail> {
        let until = Instant::now() + DEADLINE;
        loop {
            let messages = self.messages();
            if check(&messages) {
                return messages;
            }
            assert!(
                Instant::now() < until,
                "{what}: not in the mailbox after {DEADLINE:?}; it holds {} messages:\n{}\n\
                 --- mail log\n{}",
                messages.len(),
                fs::read_to_string(&self.mbox).unwrap_or_default(),
                fs::read_to_string(self.log.join("mainlog")).unwrap_or_default(),
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A message (or a MIME part): unfolded headers and its body, decoded from its
/// transfer encoding.
#[derive(Debug, Clone)]
struct Mail {
    headers: Vec<(String, String)>,
    body: String,
}

impl Mail {
    fn parse(text: &str) -> Mail {
        let text = text.replace("\r\n", "\n");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, v)) = headers.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((n, v)) = line.split_once(':') {
                headers.push((n.to_string(), v.trim().to_string()));
            }
        }
        let mut mail = Mail {
            headers,
            body: body.to_string(),
        };
        mail.body = match mail
            .header("Content-Transfer-Encoding")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("base64") => String::from_utf8(base64_decode(&mail.body)).unwrap(),
            Some("quoted-printable") => String::from_utf8(qp_decode(&mail.body)).unwrap(),
            _ => mail.body,
        };
        mail
    }

    /// Every value of header `name`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Whom the message was delivered to (Exim's `Envelope-to:`).
    fn envelope_to(&self) -> &str {
        self.header("Envelope-to").unwrap_or("")
    }

    /// The parts of a multipart message.
    fn parts(&self) -> Vec<Mail> {
        let ctype = self.header("Content-Type").unwrap_or("");
        let Some(boundary) = ctype
            .split("boundary=\"")
            .nth(1)
            .and_then(|b| b.split('"').next())
        else {
            return Vec::new();
        };
        self.body
            .split(&format!("--{boundary}"))
            .skip(1)
            .filter(|p| !p.starts_with("--"))
            .map(|p| Mail::parse(p.trim_start_matches('\n')))
            .collect()
    }

    /// The `text/plain` part (or the body of a message that is only text).
    fn text(&self) -> String {
        if self
            .header("Content-Type")
            .is_some_and(|c| c.starts_with("multipart/"))
        {
            self.parts()
                .into_iter()
                .find(|p| {
                    p.header("Content-Type")
                        .is_some_and(|c| c.starts_with("text/plain"))
                })
                .map(|p| p.body)
                .unwrap_or_default()
        } else {
            self.body.clone()
        }
    }

    /// The attachment named `name`, parsed as JSON.
    fn json_attachment(&self, name: &str) -> Option<Value> {
        self.parts()
            .into_iter()
            .find(|p| {
                p.header("Content-Disposition")
                    .is_some_and(|d| d.contains(&format!("filename=\"{name}\"")))
            })
            .map(|p| {
                assert_eq!(p.header("Content-Type"), Some("application/json"));
                serde_json::from_str(&p.body)
                    .unwrap_or_else(|e| panic!("{name} is not JSON ({e}): {}", p.body))
            })
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == b) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn qp_decode(text: &str) -> Vec<u8> {
    let joined = text.replace("=\n", "");
    let b = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The oracle's config: every wrong password trips `failed_logins_account` (a one
/// second hold, so it trips again soon), an e-mail sink to [`OPS`] grouping over
/// `group_secs`, and the owner's notice for that rule.
fn oracle_config(mail: &MailSystem, group_secs: u64) -> String {
    format!(
        "[rules.failed_logins_account]\n\
         threshold = 1\n\
         hold_secs = 1\n\
         \n\
         [[sinks]]\n\
         name = \"mail\"\n\
         type = \"email\"\n\
         to = [{ops}]\n\
         from = {sender}\n\
         sendmail = {sendmail}\n\
         subject_prefix = \"[e2e]\"\n\
         group_secs = {group_secs}\n\
         \n\
         [notify_owner]\n\
         enabled = true\n\
         rules = [\"failed_logins_account\"]\n\
         address = \"{{user}}@example.org\"\n\
         from = \"postmaster@example.org\"\n\
         sendmail = {sendmail}\n",
        ops = toml_str(OPS),
        sender = toml_str(SENDER),
        sendmail = toml_str(mail.sendmail.to_string_lossy()),
    )
}

/// One sink's counters from `ctl --json status`.
fn sink(oracle: &Oracle, name: &str) -> Value {
    let status = oracle.ctl_json(&["status"]);
    status["counters"]["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no sink {name} in ctl status: {status}"))
}

/// Waits (bounded) until `check` holds for the sink's counters; returns them.
fn wait_sink(oracle: &Oracle, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let s = sink(oracle, name);
        if check(&s) {
            return s;
        }
        assert!(
            Instant::now() < until,
            "sink {name}: {what}; counters: {s}\n{}",
            oracle.log_text()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn count(s: &Value, key: &str) -> u64 {
    s[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key}: {s}"))
}

/// The `failed_logins_account` alerts written so far.
fn trips(oracle: &Oracle) -> usize {
    oracle
        .alerts()
        .iter()
        .filter(|a| a["rule"] == "failed_logins_account")
        .count()
}

/// Wrong passwords for alice through the real Exim daemon: the first trips the rule
/// and gives an e-mail with its text and its JSON, and one notice to alice's owner;
/// the trips that follow within `group_secs` become one grouped e-mail, and the owner
/// hears nothing more.
#[test]
fn alerts_arrive_as_email_grouped_and_the_owner_is_told_once() {
    let world = World::new(&["alice"]);
    let mail = MailSystem::new(&world);
    let oracle = Oracle::start_with(&world, &oracle_config(&mail, 5));
    let daemon = Exim::new(&world, Via::Dlfunc, oracle.exim_socket()).daemon();

    let run = daemon
        .swaks()
        .auth_plain("alice", "wrong-1")
        .quit_after("AUTH")
        .run();
    assert_eq!(run.reply_to("AUTH").code, 535, "{}", run.transcript());

    // The first alert goes at once; so does the owner's notice.
    let messages = mail.wait("the alert e-mail and the owner's notice", |m| {
        m.iter().any(|m| m.envelope_to() == OPS)
            && m.iter().any(|m| m.envelope_to() == "alice@example.org")
    });
    let alert_mail = messages.iter().find(|m| m.envelope_to() == OPS).unwrap();
    assert_eq!(alert_mail.header("From"), Some(SENDER));
    assert_eq!(alert_mail.header("To"), Some(OPS));
    assert_eq!(alert_mail.header("Auto-Submitted"), Some("auto-generated"));
    let subject = alert_mail.header("Subject").unwrap();
    assert!(
        subject.starts_with("[e2e] account alice held for 1 s after 1 failed logins"),
        "{subject}"
    );
    let text = alert_mail.text();
    for want in [
        "Rule:      failed_logins_account (High)",
        "Account:   alice",
        "Address:   127.0.0.1",
        "Protocol:  smtp",
        "alert.json",
    ] {
        assert!(text.contains(want), "missing {want:?} in the body:\n{text}");
    }
    let json = alert_mail
        .json_attachment("alert.json")
        .unwrap_or_else(|| panic!("no alert.json in:\n{}", alert_mail.body));
    assert_eq!(json["rule"], "failed_logins_account");
    assert_eq!(json["account"], "alice");
    assert_eq!(json["ip"], "127.0.0.1");
    assert_eq!(json, oracle.alerts()[0], "the same record as alerts.jsonl");

    let notice = messages
        .iter()
        .find(|m| m.envelope_to() == "alice@example.org")
        .unwrap();
    assert_eq!(notice.header("To"), Some("alice@example.org"));
    assert_eq!(
        notice.header("Subject"),
        Some("Was this you? Sign-in activity on your mail account")
    );
    let text = notice.text();
    for want in [
        "about the mail account alice.",
        "From:          127.0.0.1",
        "Change your password now",
    ] {
        assert!(
            text.contains(want),
            "missing {want:?} in the notice:\n{text}"
        );
    }
    assert!(notice.parts().is_empty(), "the owner gets text only");

    // More trips (each once the one-second hold is over) within the five-second span.
    let until = Instant::now() + DEADLINE;
    let mut i = 2;
    while trips(&oracle) < 3 {
        assert!(
            Instant::now() < until,
            "no third trip:\n{}",
            oracle.log_text()
        );
        daemon
            .swaks()
            .auth_plain("alice", &format!("wrong-{i}"))
            .quit_after("AUTH")
            .run();
        i += 1;
    }

    // They become one e-mail when the span ends: the latest alert, with the count.
    let messages = mail.wait("the grouped e-mail", |m| {
        let n = trips(&oracle) as u64;
        m.iter().any(|m| {
            m.envelope_to() == OPS
                && m.json_attachment("alert.json")
                    .is_some_and(|j| j["group"]["count"] == n)
        })
    });
    let n = trips(&oracle);
    let to_ops: Vec<&Mail> = messages.iter().filter(|m| m.envelope_to() == OPS).collect();
    assert!(
        to_ops.len() < n,
        "{n} alerts in {} e-mails: grouped",
        to_ops.len()
    );
    let grouped = to_ops.last().unwrap();
    let subject = grouped.header("Subject").unwrap();
    assert!(
        subject.contains(&format!("({n} alerts of failed_logins_account in")),
        "{subject}"
    );
    assert!(
        grouped
            .text()
            .contains(&format!("Grouped:   {n} alerts from")),
        "{}",
        grouped.text()
    );
    let counters = sink(&oracle, "mail");
    assert_eq!(count(&counters, "failed"), 0, "{counters}");
    assert_eq!(count(&counters, "grouped"), n as u64 - 1, "{counters}");

    // The owner sink has seen every trip: one notice, the rest held back by every_secs.
    let owner = wait_sink(&oracle, "notify_owner", "every trip seen", |s| {
        count(s, "delivered") + count(s, "suppressed") == n as u64
    });
    assert_eq!(count(&owner, "delivered"), 1, "{owner}");
    assert_eq!(count(&owner, "failed"), 0, "{owner}");
    let notices = mail
        .messages()
        .iter()
        .filter(|m| m.envelope_to() == "alice@example.org")
        .count();
    assert_eq!(notices, 1, "one notice per every_secs");
    assert!(
        world.path("state/notify_owner.json").exists(),
        "who was told is kept for a restart"
    );
}

/// An account name with a CR/LF: the alert e-mail shows it escaped in its subject and
/// body and gains no header and no recipient; the owner's notice is skipped and
/// counted, and nothing is sent to the address in the name.
#[test]
fn an_account_name_with_a_line_break_adds_no_header_and_gets_no_notice() {
    let world = World::new(&["alice"]);
    let mail = MailSystem::new(&world);
    let oracle = Oracle::start_with(&world, &oracle_config(&mail, 300));
    let exim = Exim::new(&world, Via::Dlfunc, oracle.exim_socket());

    let session = exim.bh("203.0.113.9", &Dialogue::auth_only(HOSTILE, "guess"));
    session.assert_oracle_answered();
    assert_eq!(session.reply("AUTH").code, 535, "{}", session.transcript());

    let messages = mail.wait("the alert e-mail", |m| {
        m.iter().any(|m| m.envelope_to() == OPS)
    });
    let alert_mail = messages.iter().find(|m| m.envelope_to() == OPS).unwrap();
    assert!(alert_mail.all("Bcc").is_empty(), "{:?}", alert_mail.headers);
    let subject = alert_mail.header("Subject").unwrap();
    assert!(
        subject.contains("mallory\\x0d\\x0abcc: victim@example.net"),
        "escaped in the subject: {subject}"
    );
    assert!(
        alert_mail
            .text()
            .contains("Account:   mallory\\x0d\\x0abcc: victim@example.net"),
        "{}",
        alert_mail.text()
    );
    let json = alert_mail.json_attachment("alert.json").unwrap();
    assert_eq!(json["account"], "mallory\r\nbcc: victim@example.net");

    let owner = wait_sink(&oracle, "notify_owner", "the notice skipped", |s| {
        count(s, "failed") == 1
    });
    assert_eq!(count(&owner, "delivered"), 0, "{owner}");
    assert!(
        oracle
            .log_text()
            .contains("no notice: the account does not make an address"),
        "{}",
        oracle.log_text()
    );
    // Whatever arrived went to the sink's own recipient only.
    assert!(
        mail.messages().iter().all(|m| m.envelope_to() == OPS),
        "{:?}",
        mail.messages()
            .iter()
            .map(|m| m.envelope_to().to_string())
            .collect::<Vec<_>>()
    );
}
