//! access-oracle: the exim-access daemon and CLI.
//!
//! Layout, following a request from Exim (the modules' layers, lowest first, are in
//! `docs/ARCHITECTURE.md`; `scripts/check-layers` keeps every import pointing down):
//!
//! * [`server`]: sockets. [`server::exim`] reads request lines, [`server::admin`] answers
//!   `ctl`, [`server::unix`] creates sockets with the right mode and group,
//!   [`server::follow`] follows `[[sources]]`, [`server::preflight`] is what `serve` and
//!   `check-config` check before anything starts.
//! * [`protocol`]: the line protocol, one file per verb, built on `access-wire`.
//! * [`engine`]: request + `now` → verdict: [`engine::gate`] decides from what is in
//!   force, the [`rules`] count, one response path (`engine/respond.rs`) applies what
//!   they tripped.
//! * [`rules`]: one file per rule, each a component (config, state slot, hooks) listed
//!   in one registry.
//! * [`state`]: the live maps of accounts and addresses (holding the rules' slots) and
//!   the baselines; [`track`]: what is counted and learnt (windows, baselines, holds).
//! * [`enrich`]: what is known about an address or account from outside: GeoIP/ASN from
//!   `.mmdb` files, CIDR block and allow lists, reverse DNS, the disabled-accounts file.
//! * [`persist`]: the state snapshot (baselines, holds, blocks) across restarts.
//! * [`alert`] and [`sinks`]: the alert record and where it goes (each sink a component
//!   with its own bounded queue).
//! * [`audit`]: the hash-chained audit trail.
//! * [`admin`]: the admin protocol, typed views and the `ctl` client.
//! * [`sources`]: Exim and Dovecot log parsers and the `[[sources]]` config.
//! * [`commands`]: `ingest`, `replay`, `parse`, `audit verify|search`, `demo`.
//! * [`config`]: TOML, validated as a whole; [`cli`]: the command line.
//! * Leaves: [`text`] (outsiders' text made safe for a terminal), [`ratelog`]
//!   (warnings an outsider can repeat, logged once then summed up), [`files`] (reading
//!   the files a config names, bounded; creating private ones), [`problems`], [`time`],
//!   [`net`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod actions;
pub mod admin;
pub mod alert;
pub mod audit;
pub mod cli;
pub mod command;
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
