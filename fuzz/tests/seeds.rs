//! The committed seeds, and every line of the parser fixtures, through the fuzz target
//! bodies: the targets' properties checked on the stable toolchain, without libFuzzer.
//!
//! `seeds/<target>/` is made here: the protocol lines, policy bodies and HTTP requests
//! listed below, and the lines of `access-oracle/tests/fixtures/` one per file (one of
//! each shape, at most [`MAX_SEEDS`]). After the fixtures change, rewrite it and review
//! the diff:
//!
//! ```sh
//! UPDATE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use exim_access_fuzz::{Body, TARGETS};

/// The most seed files a target gets: a starting corpus, not a test suite.
const MAX_SEEDS: usize = 200;

/// Request lines for `protocol_line`: every verb with all its keys, quoting and escapes,
/// and each way a line can be refused.
const PROTOCOL_LINES: &[&[u8]] = &[
    b"ping",
    b"PING",
    b"  ping \t \r",
    b"ping\r\n",
    b"auth user=alice ip=203.0.113.7 result=fail mech=PLAIN pwhash=0a13",
    b"auth user=\"a b\\\"c\" ip=203.0.113.7 result=ok",
    b"auth user=alice ip=192.0.2.1 result=ok mech=LOGIN authenticator=login_server port=587 local_port=587 helo=\"client.example.test\" tls=TLS1.3:TLS_AES_256_GCM_SHA384:256",
    b"auth user=alice ip=[2001:db8::1] result=fail pwhash=ffffffffffffffff",
    b"auth user=alice ip=::ffff:192.0.2.1 result=fail pwhash=fffffffffffffffff",
    b"auth user=alice result=ok",
    b"auth user= ip=192.0.2.1 result=ok",
    b"auth user=alice ip=192.0.2.1 result=maybe",
    b"auth user=\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9 ip=192.0.2.1 result=ok",
    b"mail user=alice ip=192.0.2.1 sender=alice@example.org size=1024",
    b"mail user=a ip=192.0.2.1 size=-1",
    b"mail user=a ip=192.0.2.1 future=1 size=10",
    b"mail user=a ip=192.0.2.1 size=18446744073709551616",
    b"rcpt user=bob ip=192.0.2.1 rcpt=\"a b@example.org\" sender=",
    b"rcpt user=a ip= rcpt=b@example.org",
    b"rcpt user=\"a\\\"b\\\\c\\nd\\re\tf\" ip=192.0.2.1 rcpt=x@example.org",
    b"data user=alice ip=192.0.2.1 rcpts=3 size=100 msgid=1xXAPn-0007UM-2H",
    b"connect ip=2001:db8::1 helo=mail.example.org port=25 local_port=25",
    b"connect ip=not-an-ip",
    b"login user=alice ip=198.51.100.4 result=fail protocol=imap session=NFy0605hqpB/AAAB mech=PLAIN pwhash=0a13",
    b"login user=alice ip=198.51.100.4 result=ok protocol=pop3",
    b"frob x=1",
    b"au+th user=a",
    b"auth user",
    b"auth =x",
    b"auth user=a\"b",
    b"auth user=\"abc",
    b"auth user=\"a\\qb\"",
    b"auth user=\"a\\\tb\"",
    b"auth user=\"a\0b\"",
    b"auth user=\"a\"b",
    b"auth user=a user=b",
    b"auth user=\xff",
    b"helo=\"a b\" tls=TLS1.3",
];

/// Bodies for `policy_json`: what Dovecot 2.3 sends (captured from its `auth_debug` log
/// in the end-to-end tests), Dovecot 2.4's `fail_type`, a nested attribute, loose types,
/// and each way a body can be refused.
const POLICY_BODIES: &[&[u8]] = &[
    br#"{"device_id":"","local":"127.0.0.1","login":"alice","mech":"PLAIN","protocol":"imap","pwhash":"082e","remote":"198.51.100.7","rport":"40000","session_id":"d5pzw1BhQJzGM2QH","tls":false}"#,
    br#"{"device_id":"","local":"127.0.0.1","login":"alice","mech":"PLAIN","protocol":"imap","pwhash":"082e","remote":"198.51.100.7","rport":"40000","session_id":"d5pzw1BhQJzGM2QH","success":false,"policy_reject":false,"tls":false}"#,
    br#"{"device_id":"","local":"","login":"alice","mech":"PLAIN","protocol":"smtp","pwhash":"02fc","remote":"192.0.2.23","rport":"0","session_id":"","success":false,"policy_reject":true,"tls":false}"#,
    br#"{"login":"bob","pwhash":"0249","remote":"2001:db8::7","device_id":"","protocol":"pop3","session_id":"x","tls":true}"#,
    br#"{"fail_type":"credentials","login":"carol","protocol":"imap","remote":"::ffff:192.0.2.9","success":false,"tls":false}"#,
    br#"{"fail_type":"internal","login":"carol","success":false}"#,
    br#"{"attrs":{"login":"nested","deeper":{"x":[1,2,3]}},"login":"dave","success":"true"}"#,
    br#"{"login":"c\u00e9line\u0000\n","rport":4711,"tls":1,"remote":{"ip":"1.2.3.4"},"protocol":["imap"],"session_id":null}"#,
    br#"{"pwhash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","login":"erin","success":true}"#,
    br#"{"login":"\"quoted\" \\ back","remote":"[2001:db8::1]","success":false,"pwhash":"-12"}"#,
    b"{}",
    b"  \r\n{ }  ",
    b"[]",
    br#"["alice","192.0.2.1"]"#,
    br#""alice""#,
    br#"{"login":"#,
    br#"{"login":"a","login":"b"}"#,
    br#"{"a":1}{"#,
    b"\xff\xfe",
    b"",
];

/// Lines for `audit_line`: records as `ingest` wrote them (a segment start, a login, a
/// message, a failure whose user was edited afterwards), and lines that are not records.
const AUDIT_LINES: &[&[u8]] = &[
    br#"{"seq":1,"time":"2026-11-28T09:53:39.583847875Z","logged":"2026-11-28T09:53:39.583847875Z","kind":"segment","source":"oracle","prev_chain":"0000000000000000000000000000000000000000000000000000000000000000","chain":"4170dcdd5ddcc38c798c14bfb2aedc95fdf8633185a62d6a86550387cbebde3f"}"#,
    br#"{"seq":2,"time":"2026-10-01T09:10:00Z","logged":"2026-11-28T09:53:39.583847875Z","kind":"auth","source":"ingest","user":"alice","ip":"192.0.2.10","protocol":"smtp","result":"ok","file":"mainlog","offset":0,"chain":"fac7bd65f012d3af90430ead2ab4920c3a6ebd49074413b102a71431effcba26"}"#,
    br#"{"seq":3,"time":"2026-10-01T09:10:00Z","logged":"2026-11-28T09:53:39.596316103Z","kind":"sent","source":"ingest","user":"alice","ip":"192.0.2.10","protocol":"smtp","msgid":"1tQx01-000001-AB","message_id":"m1@example.org","rcpts":1,"file":"mainlog","offset":0,"chain":"dae57940e14ccecf9b5bc0a834061cf0dde759c120077789701a41074ed69696"}"#,
    br#"{"seq":4,"time":"2026-10-01T09:11:00Z","logged":"2026-11-28T09:53:39.596316103Z","kind":"auth","source":"ingest","user":"eve","ip":"198.51.100.9","protocol":"smtp","result":"fail","file":"mainlog","offset":164,"chain":"ca32d6e9965ea2bfc4e1b8f7579c815176903277930180d219920edea22507a3"}"#,
    br#"{"seq":5,"time":"2026-11-28T10:00:00Z","kind":"alert","source":"oracle","user":"a"b","rule":"failed_logins_account","severity":"high","response":"hold_account","until":"2026-11-28T10:15:00Z","reason":"x ,"chain":"00"} y","chain":"00"}"#,
    br#"{"seq":6,"time":"2026-11-28T10:00:00Z","kind":"release","source":"admin","removed":["a","b"],"chain":"zz"}"#,
    b"{}",
    b"not json",
    b"",
];

/// Byte streams for `policy_http`: an `allow` and a `report` as Dovecot 2.3.19 sent them
/// in the end-to-end tests (read off the oracle's socket with strace), several requests
/// in one buffer, each HTTP/1.1 feature the endpoint reads (chunks, `100-continue`,
/// HTTP/1.0, `Connection`), and each way a request can be refused.
const HTTP_REQUESTS: &[&[u8]] = &[
    b"POST /policy?command=allow HTTP/1.1\r\nHost: 127.0.0.1:39005\r\nDate: Sat, 28 Nov 2026 10:09:08 GMT\r\nUser-Agent: dovecot/auth-policy-client\r\nContent-Length: 186\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\nX-API-Key:  e2e-policy-key-5f0c2a9d41b7e386\r\n\r\n{\"device_id\":\"\",\"local\":\"127.0.0.1\",\"login\":\"alice\",\"mech\":\"PLAIN\",\"protocol\":\"imap\",\"pwhash\":\"02fc\",\"remote\":\"198.51.100.11\",\"rport\":\"40000\",\"session_id\":\"tW8SXlNhQJzGM2QL\",\"tls\":false}",
    b"POST /policy?command=report HTTP/1.1\r\nHost: 127.0.0.1:39005\r\nDate: Sat, 28 Nov 2026 10:09:08 GMT\r\nUser-Agent: dovecot/auth-policy-client\r\nContent-Length: 223\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\nX-API-Key:  e2e-policy-key-5f0c2a9d41b7e386\r\n\r\n{\"device_id\":\"\",\"local\":\"127.0.0.1\",\"login\":\"alice\",\"mech\":\"PLAIN\",\"protocol\":\"imap\",\"pwhash\":\"02fc\",\"remote\":\"198.51.100.11\",\"rport\":\"40000\",\"session_id\":\"tW8SXlNhQJzGM2QL\",\"success\":true,\"policy_reject\":false,\"tls\":false}",
    b"POST /policy?command=allow HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}POST /policy?command=report HTTP/1.1\r\nContent-Length: 17\r\n\r\n{\"success\":false}POST /p",
    b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3;ext=1\r\n1, \r\nA\r\n\"b\":\"xyz\"}\r\n0\r\nTrailer: t\r\n\r\n",
    b"POST /policy HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    b"POST /policy HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n{\"a\":1}",
    b"POST /policy HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /policy HTTP/1.1\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
    b"\r\n\r\nGET /policy?command=allow HTTP/1.1\r\n\r\n",
    b"POST /policy HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /policy HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /policy HTTP/1.1\r\nContent-Length: +2\r\n\r\n{}",
    b"POST /policy HTTP/1.1\r\nContent-Length: 16385\r\n\r\n",
    b"POST /policy HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4000\r\n",
    b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
    b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
    b"POST /policy HTTP/1.1\r\nNo colon\r\n\r\n",
    b"POST /policy HTTP/2.0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"POST /policy HTTP/1.1\r\nHost: x\r\n",
    b"",
];

/// One argument of a `dlfunc_abi` call, encoded as `exim_access_fuzz::dlfunc_abi` reads it.
enum Arg {
    /// A null pointer in `argv`.
    Null,
    /// A C string of these bytes (at most 255).
    Text(&'static [u8]),
    /// `prefix` (at most 15 bytes) then `mib` MiB (1 to 4) of `fill`.
    Huge(&'static [u8], u8, u8),
}

/// Function bytes of `dlfunc_abi`.
const CONFIGURE: u8 = 0;
const CHECK: u8 = 1;
const AUTH: u8 = 2;
/// `check` with a null result pointer.
const CHECK_NULL_YIELD: u8 = 255;

/// Calls for `dlfunc_abi`: what the shipped configuration passes, each way `argv` can be
/// awkward (null entries, no arguments, too many, empty, non-UTF-8, megabytes) and
/// `configure` with good and bad values.
const DLFUNC_CALLS: &[&[(u8, &[Arg])]] = &[
    &[(CHECK, &[Arg::Text(b"ping")])],
    &[(
        CHECK,
        &[
            Arg::Text(b"rcpt"),
            Arg::Text(b"user=alice"),
            Arg::Text(b"ip=192.0.2.1"),
            Arg::Text(b"rcpt=bob@example.net"),
        ],
    )],
    &[(
        CHECK,
        &[
            Arg::Text(b"mail"),
            Arg::Text(b"user=alice"),
            Arg::Text(b"ip=192.0.2.1"),
            Arg::Text(b"sender=a@example.org"),
            Arg::Text(b"size=1024"),
        ],
    )],
    &[(
        CHECK,
        &[
            Arg::Text(b"data"),
            Arg::Text(b"user=alice"),
            Arg::Text(b"ip=192.0.2.1"),
            Arg::Text(b"rcpts=3"),
            Arg::Text(b"+size=100 msgid=1xXAPn-0007UM-2H"),
        ],
    )],
    &[(
        AUTH,
        &[
            Arg::Text(b"user=alice"),
            Arg::Text(b"ip=192.0.2.1"),
            Arg::Text(b"result=ok"),
            Arg::Text(b"password=secret"),
        ],
    )],
    &[(
        AUTH,
        &[
            Arg::Text(b"user=caf\xe9"),
            Arg::Text(b"ip=2001:db8::1"),
            Arg::Text(b"result=fail"),
            Arg::Text(b"password=\xff\xfe"),
        ],
    )],
    &[(AUTH, &[Arg::Text(b"+user=\"a b\" ip=192.0.2.1 result=ok")])],
    &[(
        CHECK,
        &[Arg::Text(b"rcpt"), Arg::Null, Arg::Text(b"ip=192.0.2.1")],
    )],
    &[(AUTH, &[Arg::Null])],
    &[(CHECK, &[]), (AUTH, &[]), (CONFIGURE, &[])],
    &[(CHECK, &[Arg::Text(b""), Arg::Text(b""), Arg::Text(b"")])],
    &[(
        CHECK,
        &[
            Arg::Text(b"ping"),
            Arg::Text(b"a=1"),
            Arg::Text(b"b=2"),
            Arg::Text(b"c=3"),
            Arg::Text(b"d=4"),
            Arg::Text(b"e=5"),
            Arg::Text(b"f=6"),
            Arg::Text(b"g=7"),
        ],
    )],
    &[(
        AUTH,
        &[
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
            Arg::Null,
        ],
    )],
    &[(
        CHECK,
        &[
            Arg::Text(b"rcpt"),
            Arg::Huge(b"user=", 4, b'x'),
            Arg::Text(b"rcpt=a@b"),
        ],
    )],
    &[(
        AUTH,
        &[
            Arg::Text(b"user=a"),
            Arg::Text(b"result=ok"),
            Arg::Huge(b"password=", 2, 0xe9),
        ],
    )],
    &[
        (CONFIGURE, &[Arg::Huge(b"hash_nonce=", 1, b'n')]),
        (CHECK, &[Arg::Huge(b"", 1, b'+')]),
    ],
    &[
        (
            CONFIGURE,
            &[Arg::Text(b"timeout_ms=1"), Arg::Text(b"on_error=defer")],
        ),
        (CHECK, &[Arg::Text(b"rcpt"), Arg::Text(b"user=a")]),
        (AUTH, &[Arg::Text(b"user=a"), Arg::Text(b"result=ok")]),
    ],
    &[(
        CONFIGURE,
        &[
            Arg::Text(b"timeout_ms=0"),
            Arg::Text(b"on_error=maybe"),
            Arg::Text(b"unknown=1"),
            Arg::Text(b"socket=relative.sock"),
        ],
    )],
    &[
        (
            CONFIGURE,
            &[
                Arg::Text(b"socket=/run/access-oracle/exim.sock"),
                Arg::Text(b"+timeout_ms=60000 socket=/tmp/x.sock"),
            ],
        ),
        (CHECK, &[Arg::Text(b"ping")]),
    ],
    &[(CHECK_NULL_YIELD, &[Arg::Text(b"ping")])],
    &[(
        CHECK,
        &[
            Arg::Text(b"connect"),
            Arg::Text(b"ip=not-an-ip"),
            Arg::Text(b"helo=\"a\r\nb\""),
        ],
    )],
    &[(
        CHECK,
        &[
            Arg::Text(b"\xff\xfe\x00hidden"),
            Arg::Text(b"user=\x01\x7f"),
        ],
    )],
];

/// The bytes of one `dlfunc_abi` input.
fn dlfunc_input(calls: &[(u8, &[Arg])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (function, args) in calls {
        out.push(*function);
        out.push(u8::try_from(args.len()).unwrap());
        for arg in *args {
            match arg {
                Arg::Null => out.push(0),
                Arg::Text(b"") => out.push(1),
                Arg::Text(text) => {
                    out.push(2);
                    out.push(u8::try_from(text.len()).unwrap());
                    out.extend_from_slice(text);
                }
                Arg::Huge(prefix, mib, fill) => {
                    out.push(3);
                    out.push(u8::try_from(prefix.len()).unwrap());
                    out.extend_from_slice(prefix);
                    out.push(mib - 1);
                    out.push(*fill);
                }
            }
        }
    }
    out
}

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    fuzz_dir().join("../access-oracle/tests/fixtures")
}

/// The seeds of `target` as (file name, contents), made from the lists and fixtures.
fn made_seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    if target == "protocol_line" {
        let mut seeds: Vec<(String, Vec<u8>)> = PROTOCOL_LINES
            .iter()
            .enumerate()
            .map(|(i, line)| (format!("line-{i:02}"), line.to_vec()))
            .collect();
        // Past the per-field limits: a user name that gets shortened, an address refused.
        let long_user = format!(
            "auth user={} ip=192.0.2.1 result=fail",
            "\u{e9}".repeat(150)
        );
        let long_rcpt = format!("rcpt user=a ip=192.0.2.1 rcpt={}@x", "r".repeat(1100));
        seeds.push(("long-user".into(), long_user.into_bytes()));
        seeds.push(("long-rcpt".into(), long_rcpt.into_bytes()));
        return seeds;
    }
    if target == "policy_json" {
        let mut seeds: Vec<(String, Vec<u8>)> = POLICY_BODIES
            .iter()
            .enumerate()
            .map(|(i, body)| (format!("body-{i:02}"), body.to_vec()))
            .collect();
        let long_login = format!(r#"{{"login":"{}","success":false}}"#, r"\u00e9".repeat(200));
        seeds.push(("long-login".into(), long_login.into_bytes()));
        return seeds;
    }
    if target == "audit_line" {
        return AUDIT_LINES
            .iter()
            .enumerate()
            .map(|(i, line)| (format!("line-{i:02}"), line.to_vec()))
            .collect();
    }
    if target == "policy_http" {
        let mut seeds: Vec<(String, Vec<u8>)> = HTTP_REQUESTS
            .iter()
            .enumerate()
            .map(|(i, request)| (format!("request-{i:02}"), request.to_vec()))
            .collect();
        // Past the limits: a long head, too many header fields, chunk framing.
        let long_head = format!("POST /policy HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(8200));
        let many: String = (0..65).map(|i| format!("X-{i}: {i}\r\n")).collect();
        let many = format!("POST /policy HTTP/1.1\r\n{many}\r\n");
        let mut tiny = b"POST /policy HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        while tiny.len() < 41_000 {
            tiny.extend_from_slice(b"1;pad\r\nx\r\n");
        }
        seeds.push(("long-head".into(), long_head.into_bytes()));
        seeds.push(("many-headers".into(), many.into_bytes()));
        seeds.push(("tiny-chunks".into(), tiny));
        return seeds;
    }
    if target == "state_files" {
        return state_file_seeds();
    }
    if target == "dlfunc_abi" {
        return DLFUNC_CALLS
            .iter()
            .enumerate()
            .map(|(i, calls)| (format!("calls-{i:02}"), dlfunc_input(calls)))
            .collect();
    }
    let dovecot = target == "dovecot_log";
    let mut seeds = Vec::new();
    let mut shapes = BTreeSet::new();
    for (name, data) in fixture_logs() {
        let wanted = match name.split_once('/') {
            Some(("dovecot", _)) => dovecot,
            Some(("exim", _)) => !dovecot,
            Some(("edge", file)) => file.starts_with("dovecot-") == dovecot || file == "tai64n.log",
            _ => false,
        };
        if !wanted {
            continue;
        }
        let stem = name.replace('/', "-");
        let stem = stem.strip_suffix(".log").unwrap_or(&stem);
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            // One line per shape: the same line with other numbers teaches the fuzzer
            // nothing new.
            let shape: Vec<u8> = line
                .iter()
                .map(|&b| if b.is_ascii_digit() { b'0' } else { b })
                .collect();
            if !line.is_empty() && shapes.insert(shape) {
                seeds.push((format!("{stem}-{:03}", i + 1), line.to_vec()));
            }
        }
    }
    // Still too many: keep an even spread over the fixtures.
    if seeds.len() > MAX_SEEDS {
        let n = seeds.len();
        seeds = (0..MAX_SEEDS)
            .map(|k| seeds[k * n / MAX_SEEDS].clone())
            .collect();
    }
    seeds
}

/// Every fixture log, as (name relative to `fixtures/`, contents), sorted by name.
fn fixture_logs() -> Vec<(String, Vec<u8>)> {
    let mut logs = Vec::new();
    for dir in ["exim", "dovecot", "edge"] {
        for entry in fs::read_dir(fixtures().join(dir)).expect("the fixtures are readable") {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".golden.jsonl") {
                logs.push((format!("{dir}/{name}"), fs::read(&path).unwrap()));
            }
        }
    }
    logs.sort();
    logs
}

/// The committed seeds of `target`, as (path, contents).
fn committed_seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let mut seeds: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let data = fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    seeds.sort();
    seeds
}

/// Replaces `seeds/<target>/` with `seeds`.
fn write_seeds(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = fuzz_dir().join("seeds").join(target);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    for (name, data) in seeds {
        fs::write(dir.join(name), data).unwrap();
    }
}

#[test]
fn seeds_pass_every_target() {
    let update = std::env::var_os("UPDATE_SEEDS").is_some_and(|v| v == "1");
    for (target, body) in TARGETS {
        if update {
            write_seeds(target, &made_seeds(target));
        }
        let seeds = committed_seeds(target);
        assert!(
            !seeds.is_empty() && seeds.len() <= MAX_SEEDS,
            "seeds/{target} has {} files (1 to {MAX_SEEDS} expected)",
            seeds.len()
        );
        for (path, data) in seeds {
            run(body, &data, &path);
        }
    }
}

#[test]
fn fixture_lines_pass_the_log_targets() {
    for (name, data) in fixture_logs() {
        for line in data.split(|&b| b == b'\n') {
            let log_targets = TARGETS.into_iter().filter(|(t, _)| {
                !matches!(
                    *t,
                    "protocol_line"
                        | "policy_json"
                        | "policy_http"
                        | "audit_line"
                        | "dlfunc_abi"
                        | "state_files"
                )
            });
            for (target, body) in log_targets {
                run(body, line, Path::new(&format!("{name} ({target})")));
            }
        }
    }
}

#[test]
fn policy_bodies_pass_the_policy_target() {
    for (name, data) in made_seeds("policy_json") {
        run(exim_access_fuzz::policy_json, &data, Path::new(&name));
    }
}

#[test]
fn audit_lines_pass_the_audit_target() {
    for (name, data) in made_seeds("audit_line") {
        run(exim_access_fuzz::audit_line, &data, Path::new(&name));
    }
}

#[test]
fn http_requests_pass_the_http_target() {
    for (name, data) in made_seeds("policy_http") {
        run(exim_access_fuzz::policy_http, &data, Path::new(&name));
    }
}

#[test]
fn protocol_lines_pass_the_protocol_target() {
    for (name, data) in made_seeds("protocol_line") {
        run(exim_access_fuzz::protocol_line, &data, Path::new(&name));
    }
}

#[test]
fn dlfunc_calls_pass_the_dlfunc_target() {
    for (name, data) in made_seeds("dlfunc_abi") {
        run(exim_access_fuzz::dlfunc_abi, &data, Path::new(&name));
    }
}

/// Runs one input through a body, naming the input if it panics.
fn run(body: Body, data: &[u8], from: &Path) {
    if std::panic::catch_unwind(|| body(data)).is_err() {
        panic!(
            "{} failed on {:?}",
            from.display(),
            String::from_utf8_lossy(data)
        );
    }
}

/// Seeds for `state_files`: a journal of every kind of change and a snapshot, as the
/// oracle writes them (the journal cut where its data ends: the file is made whole at
/// once), and each damaged a little.
fn state_file_seeds() -> Vec<(String, Vec<u8>)> {
    use access_oracle::config::{Config, RawConfig};
    use access_oracle::engine::Engine;
    use access_oracle::persist::{journal, snapshot};
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_raw(RawConfig::default()).unwrap();
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let (engine, _alerts) = Engine::new(&config, now);
    let j = journal::JournalFile::open(dir.path(), 1, 0, std::time::Duration::from_secs(3600));
    engine.set_journal(j.clone());
    let ask = |line: &str| {
        let cmd = access_oracle::protocol::parse_line(line.as_bytes()).unwrap();
        engine.handle(&cmd, now);
    };
    for i in 0..6 {
        ask(&format!(
            "auth user=alice ip=198.51.100.7 result=fail pwhash={i:x}"
        ));
    }
    ask("auth user=bob ip=192.0.2.1 result=ok");
    ask("rcpt user=bob ip=192.0.2.1 rcpt=x@example.org");
    engine.block(
        "203.0.113.0/24".parse().unwrap(),
        600,
        Some("seed"),
        now,
        "root",
    );
    engine.hold("carol", 600, None, now, "root");
    engine.release("alice", now, "root");
    let (file, len) = j.current().unwrap();
    let journal_bytes = std::fs::read(file).unwrap()[..len as usize].to_vec();
    snapshot::write(engine.state(), dir.path(), now.as_second(), None, None).unwrap();
    let snapshot_bytes = std::fs::read(dir.path().join(snapshot::FILE_NAME)).unwrap();
    let mut seeds = vec![
        ("journal".to_string(), journal_bytes.clone()),
        ("snapshot".to_string(), snapshot_bytes.clone()),
        (
            "journal-body".to_string(),
            journal_bytes[journal::MAGIC.len()..].to_vec(),
        ),
    ];
    let mut flipped = journal_bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    seeds.push(("journal-flipped".into(), flipped));
    seeds.push((
        "journal-cut".into(),
        journal_bytes[..journal_bytes.len() - 5].to_vec(),
    ));
    let mut zeros = journal_bytes.clone();
    zeros.extend_from_slice(&[0; 64]);
    seeds.push(("journal-zeros".into(), zeros));
    let mut bad = snapshot_bytes.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0x01;
    seeds.push(("snapshot-flipped".into(), bad));
    seeds.push((
        "snapshot-cut".into(),
        snapshot_bytes[..snapshot_bytes.len() / 2].to_vec(),
    ));
    seeds
}
