//! access-oracle: the exim-access daemon and CLI.
//!
//! Layout, following a request from Exim:
//!
//! * [`server`]: sockets. [`server::exim`] reads request lines, [`server::admin`] answers
//!   `ctl`, [`server::unix`] creates sockets with the right mode and group.
//! * [`protocol`]: the line protocol, one file per verb, built on `access-wire`.
//! * [`engine`]: request + `now` → verdict; applies [`rules`] to [`state`].
//! * [`rules`]: one file per rule, each a config struct plus a pure function of state.
//! * [`state`]: per-account and per-IP windows, holds and blocks; per-account baselines.
//! * [`enrich`]: what is known about an address or account from outside: GeoIP/ASN from
//!   `.mmdb` files, CIDR block and allow lists, reverse DNS, the disabled-accounts file.
//! * [`persist`]: the state snapshot (baselines, holds, blocks) across restarts.
//! * [`alert`] and [`sinks`]: the alert record and where it goes (JSON lines, logs).
//! * [`audit`]: the hash-chained audit trail, `audit verify` and `audit search`.
//! * [`admin`]: the admin protocol and the `ctl` client.
//! * [`sources`]: Exim and Dovecot log parsers and `access-oracle parse`.
//! * [`text`]: outsiders' text made safe for a terminal (control characters escaped).
//! * [`ratelog`]: warnings an outsider can repeat, logged once then summed up.
//! * [`config`]: TOML, validated as a whole; [`cli`]: the command line; [`demo`].
//! * [`files`]: reading the files a config names (regular files only, bounded) and
//!   creating private ones.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod admin;
pub mod alert;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod enrich;
pub mod files;
pub mod net;
pub mod persist;
pub mod problems;
pub mod protocol;
pub mod ratelog;
pub mod rules;
pub mod server;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod text;
pub mod time;
pub mod track;
