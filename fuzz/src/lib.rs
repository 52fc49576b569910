//! The bodies of the fuzz targets, as plain functions of the input bytes.
//!
//! Each `fuzz_targets/NAME.rs` only hands libFuzzer's input to the function `NAME` here.
//! Keeping the bodies in a library lets `cargo test` run the committed seeds through them
//! on the stable toolchain (`tests/seeds.rs`), where libFuzzer's instrumentation is not
//! available. A body panics when a property fails; libFuzzer reports the panic as a
//! crash and saves the input under `fuzz/artifacts/NAME/`.
//!
//! * [`protocol_line`]: the Exim socket's request line (tokenizer and per-verb checks).
//! * [`exim_log`]: Exim mainlog and paniclog lines, alone and through the per-line format
//!   guess.
//! * [`dovecot_log`]: Dovecot log lines.
//! * [`policy_json`]: the JSON body of a Dovecot auth policy request.
//! * [`audit_line`]: a line of an audit trail file.
//! * [`policy_http`]: the bytes of a connection to the policy endpoint (HTTP/1.1 heads,
//!   bodies, chunks).
//! * [`dlfunc_abi`]: `libexim_access.so`'s exports called through their C ABI with
//!   random `argc`/`argv` (null pointers, empty, non-UTF-8 and megabyte strings).
//! * [`state_files`]: the bytes of a state journal file and of a state snapshot, read
//!   back as a start does.
//!
//! Only `dlfunc_abi` holds unsafe code: the calls through the C ABI.
#![deny(unsafe_code)]
#![deny(missing_docs)]

#[allow(unsafe_code)]
mod dlfunc_abi;
pub use dlfunc_abi::{MAX_FUZZ_ARGS, dlfunc_abi};

use std::mem::MaybeUninit;
use std::sync::LazyLock;

use access_oracle::config::{Config, RawConfig};
use access_oracle::engine::Engine;
use access_oracle::engine::policy::{PolicyAttempt, PolicySettings, PolicyVerdict};
use access_oracle::protocol::{self, MAX_USER_BYTES, Outcome, ProtocolError, Reply};
use access_oracle::server::policy::http::{
    self, MAX_BODY_BYTES, MAX_REQUEST_BYTES, Parsed, Progress,
};
use access_oracle::server::policy::request::{self, MAX_PROTOCOL_BYTES, MAX_SESSION_BYTES};
use access_oracle::server::policy::verdict_json;
use access_oracle::sources::{Format, LineContext, ParseStats, parse_line};
use access_wire::{Pair, Request};
use jiff::tz::TimeZone;

/// A target's body: one input, a panic when a property fails.
pub type Body = fn(&[u8]);

/// Every target: its name (as in `Cargo.toml` and `seeds/`) and its body.
pub const TARGETS: [(&str, Body); 8] = [
    ("protocol_line", protocol_line),
    ("exim_log", exim_log),
    ("dovecot_log", dovecot_log),
    ("policy_json", policy_json),
    ("policy_http", policy_http),
    ("audit_line", audit_line),
    ("dlfunc_abi", dlfunc_abi),
    ("state_files", state_files),
];

/// The bytes of a state journal file (as they are, and after the journal's first line)
/// and of a state snapshot, read back as a start reads them (the files can be damaged
/// by a disk or edited by hand). Properties: no panic; a replay applies no more records
/// than it read and names offsets inside the file; a snapshot refused leaves nothing in
/// the state.
pub fn state_files(data: &[u8]) {
    use access_oracle::persist::{journal, snapshot};
    use access_oracle::state::State;
    const NOW: i64 = 1_800_000_000;
    let state = State::default();
    let mut headed = journal::MAGIC.to_vec();
    headed.extend_from_slice(data);
    for bytes in [data, &headed[..]] {
        let mut out = journal::Replayed::default();
        let problems = journal::replay_file(&state, bytes, 0, NOW, &mut out);
        assert!(out.applied <= out.records, "{out:?}");
        for (offset, why) in &problems {
            assert!(*offset as usize <= bytes.len(), "{offset}: {why}");
        }
    }
    let fresh = State::default();
    if snapshot::read_bytes(&fresh, std::path::Path::new("fuzz"), data, NOW).is_err() {
        assert_eq!(
            fresh.baseline_count(),
            0,
            "a refused snapshot left baselines"
        );
        assert!(fresh.blocks().is_empty(), "a refused snapshot left blocks");
    }
}

/// One line of an audit trail file, as `audit verify` and `audit search` read it (the
/// files can be edited by anyone who can write them).
///
/// Properties: no panic; a line that comes apart into content and chain value and whose
/// content reads as a record, sealed again, comes apart into a content that reads as
/// the same record, with a chain value that checks.
pub fn audit_line(data: &[u8]) {
    use access_oracle::audit::record::{self, GENESIS, Record};
    const KEY: &[u8] = b"fuzz key, 32 bytes long, no more";
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    // What `search` does with every line.
    let _ = serde_json::from_str::<Record>(line);
    // What `verify` does.
    let Ok(unsealed) = record::unseal(line) else {
        return;
    };
    let _ = record::check(KEY, &GENESIS, unsealed.content.as_bytes(), &unsealed.chain);
    // An encrypted record is opened (and refused: nothing here was sealed with KEY).
    let crypt = access_oracle::audit::crypt::Crypt::new(KEY);
    let _ = record::read_line(line, Some(&crypt));
    let Ok(r) = serde_json::from_str::<Record>(&unsealed.content) else {
        return;
    };
    let prev = [7u8; 32];
    let (sealed, chain) = record::seal(&r, &prev, KEY);
    let again = record::unseal(&sealed).unwrap_or_else(|e| panic!("{sealed:?}: {e}"));
    assert_eq!(again.chain, chain, "{sealed:?}");
    assert!(
        record::check(KEY, &prev, again.content.as_bytes(), &chain),
        "{sealed:?}"
    );
    let back: Record = serde_json::from_str(&again.content).expect("a sealed record reads back");
    assert_eq!(back, r, "{sealed:?}");
    // Sealed encrypted, it opens to the same record.
    let mut buf = Vec::new();
    record::seal_into(&mut buf, &r, &prev, KEY, Some(&crypt));
    let line = String::from_utf8(buf).expect("UTF-8");
    let (_, opened) =
        record::read_line(&line, Some(&crypt)).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(opened, r, "{line:?}");
}

/// One request line from a client of the Exim socket.
///
/// Properties: no panic; a line the tokenizer refuses is refused by the protocol with
/// the same error; a tokenized request, its values re-encoded with
/// [`access_wire::encode_value`], tokenizes to the same request (the same holds for the
/// library's packed `+` pairs); an error is answered on exactly one line.
pub fn protocol_line(data: &[u8]) {
    let command = protocol::parse_line(data);
    match access_wire::parse_request(data) {
        Ok(request) => reencodes_to_itself(&request),
        Err(e) => assert_eq!(command, Err(ProtocolError::Wire(e))),
    }
    if let Err(e) = command {
        answered_on_one_line(Reply::Error(e.to_string()));
    }
    if let Ok(pairs) = access_wire::parse_pairs(data) {
        let line = encode_pairs(String::new(), &pairs);
        match access_wire::parse_pairs(line.as_bytes()) {
            Ok(again) => assert_eq!(again, pairs, "packed pairs re-encoded as {line:?}"),
            Err(e) => panic!("packed pairs re-encoded as {line:?} do not parse: {e}"),
        }
    }
}

/// Re-encodes `request` with [`access_wire::encode_value`] and checks it reads back the same.
fn reencodes_to_itself(request: &Request<'_>) {
    let line = encode_pairs(request.verb.to_string(), &request.pairs);
    match access_wire::parse_request(line.as_bytes()) {
        Ok(again) => assert_eq!(&again, request, "request re-encoded as {line:?}"),
        Err(e) => panic!("request re-encoded as {line:?} does not parse: {e}"),
    }
}

/// `out` followed by ` key=value` for each pair, each value encoded.
fn encode_pairs(mut out: String, pairs: &[Pair<'_>]) -> String {
    for (key, value) in pairs {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        access_wire::encode_value(&mut out, value);
    }
    out
}

/// Checks that `reply` is written as one line: a newline at the end and no other control
/// byte, so that a client never reads half of it as the next reply.
fn answered_on_one_line(reply: Reply) {
    let mut out = Vec::new();
    reply.write_line(&mut out);
    let (last, text) = out.split_last().expect("a reply is never empty");
    assert_eq!(*last, b'\n', "reply {out:?} does not end with a newline");
    assert!(
        !text.iter().any(u8::is_ascii_control),
        "reply {out:?} has a control byte before its newline"
    );
}

/// The contexts log lines are parsed in: the fixtures' (UTC, a reference after them), a
/// zone with daylight saving time and a reference just after a new year (syslog lines
/// without a year, local times in a gap or a fold), and a paniclog.
struct Contexts {
    mainlog: LineContext,
    local: LineContext,
    paniclog: LineContext,
}

static CONTEXTS: LazyLock<Contexts> = LazyLock::new(|| {
    let cet = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").expect("a valid POSIX time zone");
    let context = |file: &str, tz: TimeZone, reference: &str| {
        LineContext::new(file, tz, reference.parse().expect("a valid reference time"))
    };
    Contexts {
        mainlog: context("fuzz/mainlog", TimeZone::UTC, "2026-12-01T00:00:00Z"),
        local: context("fuzz/mail.log", cet, "2027-12-31T23:30:00Z"),
        paniclog: context("fuzz/paniclog", TimeZone::UTC, "2026-12-01T00:00:00Z"),
    }
});

/// Exim log lines, in every context, read as Exim's and through the per-line guess.
///
/// Properties (of every line, split at newlines as the log reader does): no panic; every
/// event points at its line's file and offset and serializes to JSON as
/// `access-oracle parse` prints it; the result can be counted.
pub fn exim_log(data: &[u8]) {
    let c = &*CONTEXTS;
    for line in data.split(|&b| b == b'\n') {
        for ctx in [&c.mainlog, &c.local, &c.paniclog] {
            parses_soundly(Format::Exim, line, ctx);
        }
        for ctx in [&c.mainlog, &c.local] {
            parses_soundly(Format::Auto, line, ctx);
        }
    }
}

/// Dovecot log lines, with the same properties as [`exim_log`].
pub fn dovecot_log(data: &[u8]) {
    let c = &*CONTEXTS;
    for line in data.split(|&b| b == b'\n') {
        for ctx in [&c.mainlog, &c.local] {
            parses_soundly(Format::Dovecot, line, ctx);
        }
    }
}

/// Parses `line` and checks what came out.
fn parses_soundly(format: Format, line: &[u8], ctx: &LineContext) {
    let parsed = parse_line(format, line, ctx);
    for event in parsed.events() {
        assert_eq!(event.file, ctx.file, "event from another file: {event:?}");
        assert_eq!(
            event.offset, ctx.offset,
            "event from another line: {event:?}"
        );
        if let Err(e) = serde_json::to_string(event) {
            panic!("event {event:?} does not serialize: {e}");
        }
    }
    ParseStats::default().record(&parsed);
}

/// The default configuration, validated once.
static CONFIG: LazyLock<Config> =
    LazyLock::new(|| Config::from_raw(RawConfig::default()).expect("the defaults validate"));

/// One request body on the policy endpoint, from Dovecot or anyone holding the key.
///
/// Properties: no panic; the reader's fast path for flat objects and serde agree on
/// every body; a body is read, or refused with a reason on one line; what is read stays
/// within the bounds the engine relies on (login name, protocol, session);
/// a fresh engine takes it as a `report` (when it says `success`) and answers `allow`
/// for it; a refusal's JSON answer carries any text (here the login name) and reads
/// back as status -1 with that very text.
pub fn policy_json(data: &[u8]) {
    // The fast path for flat objects reads what serde reads, and refuses nothing serde
    // takes (errors aside, whose wording may differ).
    match (request::parse(data), request::parse_with_serde(data)) {
        (Ok(fast), Ok(slow)) => assert_eq!(fast, slow, "fast and serde paths differ"),
        (Err(_), Err(_)) => {}
        (fast, slow) => panic!("fast path {fast:?}, serde {slow:?}"),
    }
    let r = match request::parse(data) {
        Ok(r) => r,
        Err(e) => {
            let why = e.to_string();
            assert!(!why.chars().any(char::is_control), "reason {why:?}");
            return;
        }
    };
    if let Some(login) = &r.login {
        assert!(!login.is_empty());
        assert!(
            login.len() <= MAX_USER_BYTES,
            "login of {} bytes",
            login.len()
        );
    }
    for (field, value, max) in [
        ("protocol", &r.protocol, MAX_PROTOCOL_BYTES),
        ("mech", &r.mech, MAX_PROTOCOL_BYTES),
        ("fail_type", &r.fail_type, MAX_PROTOCOL_BYTES),
        ("session_id", &r.session_id, MAX_SESSION_BYTES),
        ("device_id", &r.device_id, MAX_SESSION_BYTES),
    ] {
        if let Some(v) = value {
            assert!(v.len() <= max, "{field} of {} bytes", v.len());
        }
    }
    let (engine, _alerts) = Engine::new(&CONFIG, jiff::Timestamp::UNIX_EPOCH);
    let now = jiff::Timestamp::from_second(1_800_000_000).expect("a valid time");
    let login = r.login.as_deref().unwrap_or("");
    if let (Some(success), Some(user)) = (r.success, r.login.as_deref()) {
        for _ in 0..5 {
            engine.policy_report(
                &PolicyAttempt {
                    user,
                    ip: r.remote,
                    protocol: r.protocol.as_deref().unwrap_or("unknown"),
                    pwhash: r.pwhash,
                    session: r.session_id.as_deref(),
                    result: if success { Outcome::Ok } else { Outcome::Fail },
                    mech: r.mech.as_deref(),
                    port: r.rport,
                    tls: r.tls,
                    client: r.device_id.as_deref(),
                },
                now,
            );
        }
    }
    let settings = PolicySettings {
        tarpit_after: 1,
        tarpit_after_ip: 1,
        tarpit_secs: 3,
        reject_message: None,
    };
    let verdict = engine.policy_allow(login, r.remote, r.protocol.as_deref(), &settings, now);
    answer_reads_back(&verdict);
    answer_reads_back(&PolicyVerdict::Reject {
        message: login.into(),
        rule: "fuzz",
    });
}

/// Checks that the JSON answer of `verdict` is what Dovecot expects.
fn answer_reads_back(verdict: &PolicyVerdict) {
    let body = verdict_json(verdict);
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => panic!("answer {body:?} is not JSON: {e}"),
    };
    let status = v["status"].as_i64().expect("a numeric status");
    match verdict {
        PolicyVerdict::Continue => assert_eq!(status, 0),
        PolicyVerdict::Tarpit { secs, .. } => assert_eq!(status, *secs as i64),
        PolicyVerdict::Reject { message, .. } => {
            assert_eq!(status, -1);
            assert_eq!(v["msg"].as_str(), Some(&**message), "answer {body:?}");
        }
    }
}

/// Bytes received on a connection of the policy endpoint, read by
/// `server::policy::http::parse` as the connection reads them.
///
/// Properties: no panic; every request read from the buffer, one after another (as
/// pipelined requests are), takes at least one byte and at most what is left, within
/// the limits (body, whole request), so reading ends; the first request read in two
/// pieces (split where the first byte says, the parser's `Progress` kept in between)
/// reads as in one piece: the same request, or a refusal if either piece was refused.
pub fn policy_http(data: &[u8]) {
    let whole = http_outcome(data, &mut Progress::default());
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) * data.len() / 256);
    let mut progress = Progress::default();
    match http_outcome(&data[..split], &mut progress) {
        HttpOutcome::Partial => {
            let again = http_outcome(data, &mut progress);
            assert_eq!(again, whole, "read in two pieces split at {split}");
        }
        HttpOutcome::Refused(_) => {
            assert!(
                matches!(whole, HttpOutcome::Refused(_)),
                "refused in a piece of {split} bytes, {whole:?} in one"
            );
        }
        first => assert_eq!(first, whole, "a whole request in the first {split} bytes"),
    }
    // Pipelined: request after request from the same buffer.
    let mut progress = Progress::default();
    let mut at = 0;
    while let HttpOutcome::Request { len, .. } = http_outcome(&data[at..], &mut progress) {
        assert!(
            len >= 1 && len <= data.len() - at,
            "a request of {len} bytes"
        );
        at += len;
    }
}

/// What [`http::parse`] made of some bytes, owned, for comparisons; "send `100
/// Continue`" counts as "read more".
#[derive(Debug, PartialEq, Eq)]
enum HttpOutcome {
    Request {
        method: String,
        path: String,
        query: Option<String>,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        keep_alive: bool,
        len: usize,
    },
    Partial,
    Refused(u16),
}

fn http_outcome(data: &[u8], progress: &mut Progress) -> HttpOutcome {
    let mut headers = [const { MaybeUninit::uninit() }; http::MAX_HEADERS];
    match http::parse(data, progress, &mut headers) {
        Parsed::Request(r, len) => {
            assert!(
                r.body.len() <= MAX_BODY_BYTES,
                "a body of {} bytes",
                r.body.len()
            );
            assert!(len <= MAX_REQUEST_BYTES, "a request of {len} bytes");
            assert!(r.headers.len() <= http::MAX_HEADERS);
            HttpOutcome::Request {
                method: r.method.to_string(),
                path: r.path.to_string(),
                query: r.query.map(str::to_string),
                headers: r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                body: r.body.to_vec(),
                keep_alive: r.keep_alive,
                len,
            }
        }
        Parsed::Partial | Parsed::Continue => HttpOutcome::Partial,
        Parsed::Refused(status, why) => {
            assert!(matches!(status.code(), 400 | 413 | 431), "{status:?}");
            assert!(!why.chars().any(char::is_control), "reason {why:?}");
            HttpOutcome::Refused(status.code())
        }
    }
}
