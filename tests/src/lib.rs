//! End-to-end test harness for exim-access: real Exim, real Dovecot, the real oracle,
//! the shipped configuration.
//!
//! The integration tests in `tests/tests/exim.rs` (verdicts through Exim) and
//! `tests/tests/logs.rs` (the logs real Exim and Dovecot write, parsed and followed by
//! the oracle) use this library; it holds everything they share, so each test reads as
//! a scenario.
//!
//! | module | what it is |
//! |---|---|
//! | [`paths`] | where the oracle binary, the library, Exim, swaks and `exim-config/` are |
//! | [`world`] | a test's private temporary tree (spool, logs, passwd file, sockets, state) |
//! | [`oracle`] | `access-oracle serve` as a child process, its alerts and `ctl`; a stale socket and a silent listener as stand-ins for a crashed or hung oracle |
//! | [`exim`] | `exim -C <shipped config> -D...` runs: `-bh` sessions (whole or line by line) and a loopback daemon |
//! | [`crowdsec`] | a real CrowdSec Local API (`crowdsec -no-cs`) with its own config, database and loopback port; `cscli` against it |
//! | [`debian`] | Debian's split configuration generated with the shipped `exim-config/debian/` files |
//! | [`fail2ban`] | a real `fail2ban-server` with its own config, socket and jail (a dummy action recording bans and unbans); `fail2ban-client` against it |
//! | [`swaks`] | the swaks client against that daemon |
//! | [`dovecot`] | a standalone Dovecot 2.3 with its own directories, log and loopback ports; optionally the shipped policy and Exim-socket snippets |
//! | [`http`] | a minimal HTTP/1.1 client for the oracle's Dovecot policy endpoint |
//! | [`https_receiver`] | an HTTPS receiver with a test CA's certificate for the webhook sink: records every request, can answer errors or hang |
//! | [`netns`] | a network namespace of the test's own (`ip netns`), deleted when dropped; nft inside it and its sets' elements |
//! | [`mail`] | the tests' mail system: Exim's `sendmail` wrapper delivering into one mbox file |
//! | [`imap`], [`pop3`] | minimal IMAP and POP3 clients that can pose as any source address |
//! | [`parse`] | `access-oracle parse` on a log a test produced: events, dead letters, counts |
//! | [`rsyslog`] | a real rsyslogd receiving syslog over TLS (with a test CA's certificate), TCP and UDP on loopback; what it parsed, per listener |
//! | [`smtp`] | dialogues, reply parsing, pairing client lines with replies |
//! | [`process`] | running a child with input, captured output and a deadline |
//! | [`prometheus`] | a strict reader of the Prometheus text format, for the oracle's `/metrics` |
//! | [`tlsca`] | a test CA made by the test: CA, server and client certificates as PEM files, a rustls server config |
//!
//! Prerequisites: run as root (Exim accepts `-C` with `-D` from root, the spool must be
//! handed to `Debian-exim`, Dovecot's master starts as root), Exim 4.96 heavy, swaks,
//! `dovecot-imapd` and `dovecot-pop3d` installed (`scripts/setup-debian`), and the
//! workspace binaries built:
//!
//! ```text
//! cargo build -p access-oracle && cargo build --release -p exim-dlfunc
//! cargo test -p exim-access-e2e
//! ```
//!
//! Tests are independent: each has its own [`World`], oracle, sockets, daemon port and
//! Dovecot (directories and ports), so they run in parallel. `E2E_KEEP=1` keeps each
//! test's directory for inspection.

pub mod crowdsec;
pub mod debian;
pub mod dovecot;
pub mod exim;
pub mod fail2ban;
pub mod http;
pub mod https_receiver;
pub mod imap;
pub mod mail;
pub mod netns;
pub mod oracle;
pub mod parse;
pub mod paths;
pub mod pop3;
pub mod process;
pub mod prometheus;
pub mod rsyslog;
pub mod smtp;
pub mod swaks;
pub mod tlsca;
pub mod world;

pub use dovecot::{Dovecot, DovecotSetup, PolicyServer};
pub use exim::{Exim, EximDaemon, LiveSession, Session, Via};
pub use fail2ban::Fail2ban;
pub use http::{HttpClient, HttpResponse};
pub use https_receiver::HttpsReceiver;
pub use imap::{Imap, ImapResponse};
pub use oracle::{Oracle, POLICY_API_KEY, POLICY_PATH, SilentOracle, stale_socket};
pub use parse::ParsedLog;
pub use pop3::Pop3;
pub use rsyslog::Rsyslog;
pub use smtp::{Dialogue, Reply};
pub use swaks::{Swaks, SwaksRun};
pub use world::{PASSWORD, PASSWORD_HASH, World};
