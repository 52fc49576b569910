//! `libexim_access.so`: the library Exim loads with `${dlfunc}` to ask the access oracle
//! for a verdict, synchronously, inside the SMTP dialogue.
//!
//! # The Exim contract
//!
//! Exim (the heavy build, with `Expand_dlfunc`) calls
//! `int f(uschar **yield, int argc, uschar *argv[])` with the arguments that follow the
//! file and function names. This library exports three such functions:
//!
//! ```text
//! ${dlfunc{/usr/lib/exim4/access/libexim_access.so}{configure}{socket=/run/access-oracle/exim.sock}{timeout_ms=250}{on_error=accept}}
//! ${dlfunc{LIB}{check}{rcpt}{user=$authenticated_id}{ip=$sender_host_address}{rcpt=$local_part@$domain}}
//! ${dlfunc{LIB}{auth}{user=$auth2}{ip=$sender_host_address}{result=${if ...{ok}{fail}}}{password=$auth3}}
//! ```
//!
//! * `configure` sets, for the calling Exim process, `socket=` (default
//!   `/run/access-oracle/exim.sock`), `timeout_ms=` (1..=60000, default 250: the bound on
//!   a whole round trip), `on_error=accept|defer` (default `accept`) and `hash_nonce=`
//!   (default `exim-access-default-nonce`). It expands to the empty string; a bad value is
//!   logged and ignored.
//! * `check` takes a protocol verb (`auth mail rcpt data connect login ping`) and
//!   `key=value` arguments, sends `VERB key=value ...` and expands to the reply line:
//!   `accept [text]`, `defer <text>`, `deny <text>`, `error <why>`, `pong`.
//! * `auth` is for a `plaintext` authenticator's `server_condition`: it needs
//!   `result=ok|fail` (the local password check), sends an `auth` request and expands to
//!   `yes` (235), `no` (535) or a deferral text (435).
//!
//! Arguments: at most 7 per call (Exim 4.96 crashes at 8), each `key=value` (the library
//! does the quoting) or `+key=value key="quoted value" ...` (several pairs in the wire
//! syntax, as `${quote:...}` writes them); an empty argument is skipped; a key given twice
//! is refused. `password=` never leaves the process: it is replaced by `pwhash=`,
//! Dovecot's 12-bit policy hash. Connection facts the call leaves out (`helo`, `port`,
//! `local_port`, `tls`, `mech`) are added from Exim's variables.
//!
//! Every call returns `OK` with a string: when no verdict can be had (oracle unreachable
//! or too slow, an argument refused, an internal error) the answer follows `on_error`,
//! and the reason goes to Exim's main log, prefixed `exim-access:`. The library never
//! returns `FAIL_FORCED`, never lets a panic cross into Exim, never blocks longer than
//! `timeout_ms`, and never lets a SIGPIPE reach the process.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | `ffi` | the only unsafe code: the exports, argument pointer checks, `catch_unwind`, `*yield`, Exim's `log_write` / `expand_string`, two socket calls |
//! | `status` | Exim's return codes, pinned against `local_scan.h` |
//! | `calls` | what each export does, in safe Rust; the per-process state |
//! | `args` | argv -> verb and validated pairs (+ packed pairs, the password kept apart) |
//! | `facts` | connection facts added from Exim's variables |
//! | `pwhash`, `sha256` | Dovecot's truncated password hash, and the SHA-256 under it |
//! | `wire` | the request line, through the shared `access-wire` encoder |
//! | `client` | the persistent connection, the deadline, one reconnect |
//! | `verdict` | reply or failure -> the expansion result under `on_error` |
//! | `settings` | what `configure` sets |
//! | `exim` | the seam between the library and Exim's services, faked in tests |
//!
//! std + libc + `access-wire` only: no threads, no async runtime.
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod args;
mod calls;
mod client;
mod exim;
mod facts;
#[allow(unsafe_code)]
mod ffi;
mod pwhash;
mod settings;
mod sha256;
mod status;
mod verdict;
mod wire;

pub use ffi::{auth, check, configure};
