//! What `configure`, `check` and `auth` do, in safe Rust, once `ffi` has checked the
//! pointers: validate the arguments, build the request, ask the oracle, map the answer.
//!
//! Every call returns a string, never an error: a problem (a refused argument, an oracle
//! that cannot be reached, an `error` reply) is written to Exim's main log and answered
//! with the `on_error` fallback (see [`crate::verdict`]). The settings and the connection
//! live in a thread-local [`Library`]: Exim processes are single-threaded, and tests,
//! which run on several threads, each get their own.

use std::cell::{Cell, RefCell};

use crate::args::{self, ArgError, Call, LocalResult};
use crate::client::Client;
use crate::exim::Exim;
use crate::facts;
use crate::pwhash::pwhash;
use crate::settings::{OnError, Settings};
use crate::verdict::{self, Reply};
use crate::wire;

/// The library's exported functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `configure`: change this process's settings.
    Configure,
    /// `check`: forward a request, return the reply line.
    Check,
    /// `auth`: an `auth` request, answered for a `server_condition`.
    Auth,
}

impl Function {
    /// The exported name, used in log lines.
    pub fn name(self) -> &'static str {
        match self {
            Function::Configure => "configure",
            Function::Check => "check",
            Function::Auth => "auth",
        }
    }
}

thread_local! {
    /// This process's settings and connection.
    static LIBRARY: RefCell<Library> = RefCell::new(Library::default());
}

/// The per-process state: settings and the connection to the oracle.
#[derive(Default)]
struct Library {
    /// What `configure` set.
    settings: Settings,
    /// The persistent connection.
    client: Client,
}

/// Runs `function` with the arguments `ffi` read (or the reason it could not read them).
///
/// For `auth`, `local` receives the local password result first thing, so that `ffi` can
/// still answer with it if a panic cuts the call short.
pub fn run(
    function: Function,
    exim: &dyn Exim,
    raw: Result<Vec<&[u8]>, ArgError>,
    local: &Cell<Option<LocalResult>>,
) -> String {
    if let (Function::Auth, Ok(raw)) = (function, &raw) {
        local.set(args::local_result_hint(raw));
    }
    #[cfg(test)]
    if PANIC_NEXT_CALL.with(|p| p.replace(false)) {
        panic!("test panic in {}", function.name());
    }
    LIBRARY.with(|library| match library.try_borrow_mut() {
        Ok(mut library) => match function {
            Function::Configure => library.configure(exim, raw),
            Function::Check => library.check(exim, raw),
            Function::Auth => library.auth(exim, raw, local),
        },
        // Only possible if Exim called back into the library from inside a call.
        Err(_) => {
            exim.log(&format!("{}: called re-entrantly", function.name()));
            fallback_text(function, on_error(), local.get())
        }
    })
}

/// The current `on_error`, or `accept` when it cannot be read (e.g. during a panic).
pub fn on_error() -> OnError {
    LIBRARY
        .try_with(|library| library.try_borrow().map(|l| l.settings.on_error).ok())
        .ok()
        .flatten()
        .unwrap_or(OnError::Accept)
}

/// The answer of `function` when no verdict can be had.
fn fallback_text(function: Function, on_error: OnError, local: Option<LocalResult>) -> String {
    match function {
        Function::Configure => String::new(),
        Function::Check => verdict::check_fallback(on_error).to_string(),
        Function::Auth => verdict::auth_fallback(local, on_error).to_string(),
    }
}

/// Puts this thread's library back to its defaults (tests share threads sometimes).
#[cfg(test)]
pub fn reset() {
    LIBRARY.with(|library| *library.borrow_mut() = Library::default());
}

#[cfg(test)]
thread_local! {
    /// Set by a test to make the next call on this thread panic.
    static PANIC_NEXT_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Makes the next call on this thread panic, to test the panic boundary in `ffi`.
#[cfg(test)]
pub fn panic_next_call() {
    PANIC_NEXT_CALL.with(|p| p.set(true));
}

impl Library {
    /// `configure`: applies every valid setting, logs the rest; answers the empty string.
    fn configure(&mut self, exim: &dyn Exim, raw: Result<Vec<&[u8]>, ArgError>) -> String {
        let call = match raw.and_then(|raw| args::parse(&raw, false)) {
            Ok(call) => call,
            Err(e) => {
                exim.log(&format!("configure: {e}; settings unchanged"));
                return String::new();
            }
        };
        if call.password.is_some() {
            exim.log("configure: unknown key password ignored");
        }
        let socket_before = self.settings.socket.clone();
        for e in self.settings.apply(&call.pairs) {
            exim.log(&format!("configure: {e}"));
        }
        if self.settings.socket != socket_before {
            self.client.disconnect();
        }
        String::new()
    }

    /// `check`: forwards `VERB key=value ...` and returns the reply line.
    fn check(&mut self, exim: &dyn Exim, raw: Result<Vec<&[u8]>, ArgError>) -> String {
        let on_error = self.settings.on_error;
        let fallback = verdict::check_fallback(on_error);
        let prepared = raw
            .and_then(|raw| args::parse(&raw, true))
            .map_err(Refusal::from)
            .and_then(|call| self.request(exim, call));
        let (verb, request) = match prepared {
            Ok(request) => request,
            Err(e) => {
                exim.log(&format!("check: {e}; answered {fallback:?}"));
                return fallback.to_string();
            }
        };
        let context = format!("check {verb}");
        let Some(line) = self.ask(exim, &context, &request, fallback) else {
            return fallback.to_string();
        };
        match verdict::parse_reply(&line) {
            // A request the oracle could not read must not let the command through on
            // that account: it is answered like an unreachable oracle.
            Some(Reply::Error(text)) => {
                exim.log(&format!(
                    "{context}: the oracle refused the request: {}; answered {fallback:?}",
                    shorten(text)
                ));
                fallback.to_string()
            }
            Some(_) => line,
            None => {
                exim.log(&format!(
                    "{context}: unexpected reply {:?}; answered {fallback:?}",
                    shorten(&line)
                ));
                fallback.to_string()
            }
        }
    }

    /// `auth`: sends an `auth` request and answers for a `server_condition`.
    fn auth(
        &mut self,
        exim: &dyn Exim,
        raw: Result<Vec<&[u8]>, ArgError>,
        local: &Cell<Option<LocalResult>>,
    ) -> String {
        let on_error = self.settings.on_error;
        let prepared = raw
            .and_then(|raw| args::parse(&raw, false))
            .and_then(|call| Ok((args::local_result(&call.pairs)?, call)))
            .map_err(Refusal::from)
            .and_then(|(result, call)| Ok((result, self.request(exim, call)?.1)));
        let (result, request) = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                let fallback = verdict::auth_fallback(local.get(), on_error);
                exim.log(&format!("auth: {e}; answered {fallback:?}"));
                return fallback.to_string();
            }
        };
        local.set(Some(result));
        let fallback = verdict::auth_fallback(Some(result), on_error);
        let Some(line) = self.ask(exim, "auth", &request, fallback) else {
            return fallback.to_string();
        };
        let reply = verdict::parse_reply(&line);
        match reply.and_then(|reply| verdict::auth_answer(reply, result)) {
            Some(answer) => answer,
            None => {
                exim.log(&format!(
                    "auth: no verdict in the reply {:?}; answered {fallback:?}",
                    shorten(&line)
                ));
                fallback.to_string()
            }
        }
    }

    /// Builds the request line of a validated call (verb `auth` when it has none): the
    /// password replaced by its hash, connection facts added.
    fn request(&self, exim: &dyn Exim, call: Call) -> Result<(&'static str, String), Refusal> {
        let verb = call.verb.unwrap_or("auth");
        let mut pairs = call.pairs;
        if let Some(password) = call.password {
            let hash = pwhash(
                &self.settings.hash_nonce,
                pairs.get_bytes("user").unwrap_or(b""),
                &password,
            );
            pairs.push("pwhash", hash)?;
        }
        facts::add_missing(verb, &mut pairs, exim);
        Ok((verb, wire::request_line(verb, &mut pairs)?))
    }

    /// One round trip; the cleaned reply line, or `None` after logging why there is none.
    fn ask(
        &mut self,
        exim: &dyn Exim,
        context: &str,
        request: &str,
        fallback: &str,
    ) -> Option<String> {
        let settings = &self.settings;
        match self
            .client
            .round_trip(&settings.socket, request, settings.timeout)
        {
            Ok(reply) => Some(verdict::clean_line(&reply)),
            Err(e) => {
                exim.log(&format!(
                    "{context}: no verdict from the oracle at {} ({} ms): {e}; answered {fallback:?}",
                    settings.socket.display(),
                    settings.timeout.as_millis()
                ));
                None
            }
        }
    }
}

/// Why a request was not sent.
#[derive(Debug)]
enum Refusal {
    /// The arguments were refused.
    Args(ArgError),
    /// The request line would be too long.
    TooLong(wire::TooLong),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Args(e) => e.fmt(f),
            Refusal::TooLong(e) => e.fmt(f),
        }
    }
}

impl From<ArgError> for Refusal {
    fn from(e: ArgError) -> Self {
        Refusal::Args(e)
    }
}

impl From<wire::TooLong> for Refusal {
    fn from(e: wire::TooLong) -> Self {
        Refusal::TooLong(e)
    }
}

/// At most 64 characters of `s`, for a log line.
fn shorten(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::{Behaviour, TempSocket, echo, spawn_oracle};
    use crate::exim::FakeExim;
    use std::time::Duration;

    fn call(function: Function, exim: &dyn Exim, args: &[&str]) -> String {
        let raw: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        run(function, exim, Ok(raw), &Cell::new(None))
    }

    fn configure_for(sock: &TempSocket, extra: &[&str]) {
        reset();
        let socket = format!("socket={}", sock.path.display());
        let mut args = vec![socket.as_str(), "timeout_ms=2000"];
        args.extend_from_slice(extra);
        let exim = FakeExim::default();
        assert_eq!(call(Function::Configure, &exim, &args), "");
        assert_eq!(exim.log_lines(), Vec::<String>::new());
    }

    #[test]
    fn check_sends_facts_and_a_hash_instead_of_the_password() {
        let sock = TempSocket::new("calls-check");
        let requests = spawn_oracle(&sock.path, Behaviour::Serve, |_| "defer hold".into());
        configure_for(&sock, &["hash_nonce=nonce"]);
        let exim = FakeExim::with(&[("$sender_helo_name", "pc"), ("$tls_in_cipher", "")]);
        let answer = call(
            Function::Check,
            &exim,
            &[
                "login",
                "user=u",
                "ip=192.0.2.1",
                "password=p",
                "+result=fail",
            ],
        );
        assert_eq!(answer, "defer hold");
        assert_eq!(
            requests.recv().unwrap(),
            "login user=u ip=192.0.2.1 result=fail pwhash=0249",
            "login gets no connection facts; the hash is pwhash(nonce, u, p)"
        );
        let answer = call(Function::Check, &exim, &["rcpt", "user=u", "rcpt=a@b"]);
        assert_eq!(answer, "defer hold");
        assert_eq!(requests.recv().unwrap(), "rcpt user=u rcpt=a@b helo=pc");
        assert_eq!(exim.log_lines(), Vec::<String>::new());
    }

    #[test]
    fn check_without_an_oracle_follows_on_error_and_logs() {
        let sock = TempSocket::new("calls-down");
        configure_for(&sock, &[]);
        let exim = FakeExim::default();
        assert_eq!(call(Function::Check, &exim, &["ping"]), "accept");
        configure_for(&sock, &["on_error=defer"]);
        assert_eq!(
            call(Function::Check, &exim, &["ping"]),
            verdict::CHECK_FALLBACK_DEFER
        );
        let log = exim.log_lines();
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].starts_with("exim-access: check ping: no verdict from the oracle at /"));
        assert!(log[0].ends_with("answered \"accept\""), "{}", log[0]);
    }

    #[test]
    fn refused_arguments_are_logged_and_answered_with_the_fallback() {
        let sock = TempSocket::new("calls-refused");
        let requests = spawn_oracle(&sock.path, Behaviour::Serve, echo);
        configure_for(&sock, &["on_error=defer"]);
        let exim = FakeExim::default();
        let cases: &[&[&str]] = &[&["hello"], &["rcpt", "user=a", "user=b"], &["rcpt", "x"]];
        for args in cases {
            let answer = call(Function::Check, &exim, args);
            assert_eq!(answer, verdict::CHECK_FALLBACK_DEFER, "{args:?}");
        }
        let long_key = format!("{}=x", "k".repeat(8190));
        let answer = call(Function::Check, &exim, &["rcpt", &long_key]);
        assert_eq!(answer, verdict::CHECK_FALLBACK_DEFER);
        let log = exim.log_lines();
        assert_eq!(log.len(), 4, "{log:?}");
        assert!(log[0].contains("unknown verb \"hello\""), "{}", log[0]);
        assert!(log[1].contains("key user given twice"), "{}", log[1]);
        assert!(log[3].contains("request too long"), "{}", log[3]);
        assert!(requests.try_recv().is_err(), "nothing was sent");
        // A long value (what a client controls) is shortened and still asked about.
        let long = format!("user={}", "x".repeat(8190));
        call(Function::Check, &exim, &["rcpt", &long]);
        let sent = requests
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        assert!(sent.starts_with("rcpt user=xxx"), "{sent}");
    }

    #[test]
    fn error_and_unknown_replies() {
        let sock = TempSocket::new("calls-error");
        let _requests = spawn_oracle(&sock.path, Behaviour::Serve, |request| {
            if request.starts_with("ping") {
                "error missing ip".into()
            } else {
                "hold on".into()
            }
        });
        configure_for(&sock, &[]);
        let exim = FakeExim::default();
        // `error` is answered like an unreachable oracle, under on_error.
        assert_eq!(call(Function::Check, &exim, &["ping"]), "accept");
        assert_eq!(call(Function::Check, &exim, &["rcpt"]), "accept");
        configure_for(&sock, &["on_error=defer"]);
        assert_eq!(
            call(Function::Check, &exim, &["ping"]),
            verdict::CHECK_FALLBACK_DEFER
        );
        let log = exim.log_lines();
        assert!(
            log[0].contains("refused the request: missing ip; answered \"accept\""),
            "{log:?}"
        );
        assert!(log[1].contains("unexpected reply \"hold on\""), "{log:?}");
        assert!(log[2].contains("answered \"defer"), "{log:?}");
    }

    #[test]
    fn auth_maps_replies_for_server_condition() {
        let sock = TempSocket::new("calls-auth");
        let requests = spawn_oracle(&sock.path, Behaviour::Serve, |request| {
            let r = access_wire::parse_request(request.as_bytes()).unwrap();
            match r.get("user") {
                Some("held") => "defer account on hold".into(),
                Some("blocked") => "deny blocked".into(),
                Some("sneaky") => "defer yes".into(),
                Some("broken") => "error what".into(),
                _ => "accept".into(),
            }
        });
        configure_for(&sock, &[]);
        let exim = FakeExim::with(&[("$smtp_command", "AUTH PLAIN AGEAYg==")]);
        let cases = [
            ("alice", "ok", "yes"),
            ("alice", "fail", "no"),
            ("held", "ok", "account on hold"),
            ("blocked", "ok", "no"),
            ("sneaky", "ok", verdict::AUTH_DEFER_PLAIN_ANSWER),
            ("broken", "ok", "yes"),
            ("broken", "fail", "no"),
        ];
        for (user, result, want) in cases {
            let user_arg = format!("user={user}");
            let result_arg = format!("result={result}");
            let answer = call(
                Function::Auth,
                &exim,
                &[&user_arg, "ip=192.0.2.1", &result_arg, "password=pw"],
            );
            assert_eq!(answer, want, "{user} {result}");
            let seen = requests.recv().unwrap();
            assert!(seen.starts_with(&format!(
                "auth {user_arg} ip=192.0.2.1 {result_arg} pwhash="
            )));
            assert!(seen.ends_with(" mech=PLAIN"), "{seen}");
            assert!(!seen.contains("pw "), "{seen}");
        }
        assert_eq!(exim.log_lines().len(), 2, "the two error replies");
    }

    #[test]
    fn auth_without_a_local_result_never_says_yes() {
        let sock = TempSocket::new("calls-auth-bad");
        configure_for(&sock, &[]);
        let exim = FakeExim::default();
        assert_eq!(call(Function::Auth, &exim, &["user=a"]), "no");
        assert_eq!(call(Function::Auth, &exim, &["user=a", "result=yes"]), "no");
        // Refused for another reason, but the local result is known.
        assert_eq!(call(Function::Auth, &exim, &["user", "result=ok"]), "yes");
        configure_for(&sock, &["on_error=defer"]);
        assert_eq!(
            call(Function::Auth, &exim, &["user=a", "result=ok"]),
            verdict::AUTH_UNAVAILABLE
        );
        let log = exim.log_lines();
        assert!(
            log[0].contains("missing result=ok or result=fail"),
            "{log:?}"
        );
    }

    #[test]
    fn configure_logs_bad_values_and_reconnects_on_a_new_socket() {
        let a = TempSocket::new("calls-conf-a");
        let b = TempSocket::new("calls-conf-b");
        let _ra = spawn_oracle(&a.path, Behaviour::Serve, |_| "accept from a".into());
        let _rb = spawn_oracle(&b.path, Behaviour::Serve, |_| "accept from b".into());
        configure_for(&a, &[]);
        let exim = FakeExim::default();
        assert_eq!(call(Function::Check, &exim, &["ping"]), "accept from a");
        let socket_b = format!("socket={}", b.path.display());
        let answer = call(
            Function::Configure,
            &exim,
            &[&socket_b, "timeout_ms=fast", "+on_error=maybe colour=red"],
        );
        assert_eq!(answer, "");
        assert_eq!(call(Function::Check, &exim, &["ping"]), "accept from b");
        let log = exim.log_lines();
        assert_eq!(log.len(), 3, "{log:?}");
        assert!(log[0].starts_with("exim-access: configure: timeout_ms: expected"));
        assert_eq!(on_error(), OnError::Accept);
        LIBRARY.with(|l| assert_eq!(l.borrow().settings.timeout, Duration::from_secs(2)));
    }
}
