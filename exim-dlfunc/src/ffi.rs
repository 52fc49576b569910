//! The only unsafe code of the library: the three functions Exim calls, the two Exim
//! functions the library calls back, and the two socket calls std does not offer.
//!
//! Every export is a boundary (rustls-ffi style):
//!
//! 1. argument checks first: a null result or argument pointer, a count outside 0..=7
//!    (Exim 4.96 crashes at 8), an argument longer than 8192 bytes (measured with
//!    `strnlen`, never past its NUL);
//! 2. the body runs inside `catch_unwind`: a panic becomes a fixed fallback answer (and
//!    a main-log line) instead of killing the SMTP process;
//! 3. the answer is returned with `OK` in `*yield`: a NUL-terminated thread-local buffer
//!    that stays valid until the next call on the same thread (Exim copies it at once).
//!    The only other code returned is `ERROR`, when `yield` itself is null.
//!
//! Exim's `log_write` and `expand_string` are looked up with `dlsym(RTLD_DEFAULT, ...)`
//! when first needed, never linked: outside Exim (unit tests) they are absent and the
//! library neither logs nor expands.

use std::cell::{Cell, RefCell};
use std::ffi::{CString, c_char, c_int, c_uchar, c_uint, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use crate::args::{ArgError, LocalResult, MAX_ARG_BYTES, MAX_ARGS};
use crate::calls::{self, Function};
use crate::exim::Exim;
use crate::settings::OnError;
use crate::status;
use crate::verdict;

/// `${dlfunc{LIB}{configure}{key=value}...}`: sets this process's `socket`, `timeout_ms`,
/// `on_error` and `hash_nonce`; expands to the empty string.
///
/// # Safety
///
/// The `${dlfunc}` contract: `yield_` is null or points to a writable pointer; `argv` is
/// null or holds `argc` pointers, each null or to a NUL-terminated string that stays
/// unchanged during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn configure(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *const *const c_uchar,
) -> c_int {
    // SAFETY: the caller keeps the contract documented above, which is `export`'s.
    unsafe { export(Function::Configure, yield_, argc, argv) }
}

/// `${dlfunc{LIB}{check}{VERB}{key=value}...}`: forwards one request to the oracle and
/// expands to its reply line (`accept ...`, `defer ...`, `deny ...`, `error ...`, `pong`),
/// or to the `on_error` fallback.
///
/// # Safety
///
/// As for [`configure`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn check(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *const *const c_uchar,
) -> c_int {
    // SAFETY: the caller keeps the contract documented on `configure`, which is `export`'s.
    unsafe { export(Function::Check, yield_, argc, argv) }
}

/// `${dlfunc{LIB}{auth}{user=...}{ip=...}{result=ok|fail}...}`: for a `plaintext`
/// authenticator's `server_condition`; expands to `yes`, `no` or a 435 text.
///
/// # Safety
///
/// As for [`configure`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn auth(
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *const *const c_uchar,
) -> c_int {
    // SAFETY: the caller keeps the contract documented on `configure`, which is `export`'s.
    unsafe { export(Function::Auth, yield_, argc, argv) }
}

thread_local! {
    /// The answer of the last call on this thread, NUL-terminated, pointed to by `*yield`.
    static ANSWER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The body shared by the three exports.
///
/// # Safety
///
/// As for [`configure`].
unsafe fn export(
    function: Function,
    yield_: *mut *mut c_uchar,
    argc: c_int,
    argv: *const *const c_uchar,
) -> c_int {
    install_panic_hook();
    if yield_.is_null() {
        exim().log(&format!(
            "{}: called with a null result pointer",
            function.name()
        ));
        return status::ERROR;
    }
    let local = Cell::new(None);
    let answer = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `argc` and `argv` come from the caller, who keeps `export`'s contract.
        let raw = unsafe { read_args(argc, argv) };
        let text = calls::run(function, exim(), raw, &local);
        store_answer(&text)
    }));
    let pointer = answer.unwrap_or_else(|_| panic_fallback(function, local.get()));
    // SAFETY: `yield_` is not null (checked above) and points to Exim's result pointer,
    // which the contract says is writable. `pointer` is NUL-terminated and stays valid
    // until the next call on this thread (a thread-local buffer or a static string).
    unsafe { *yield_ = pointer };
    status::OK
}

/// Reads Exim's argument array into byte slices after checking every pointer and length.
///
/// # Safety
///
/// `argv` is null or holds `argc` pointers, each null or to a NUL-terminated string that
/// outlives the returned slices (the call).
unsafe fn read_args<'a>(
    argc: c_int,
    argv: *const *const c_uchar,
) -> Result<Vec<&'a [u8]>, ArgError> {
    if argv.is_null() {
        return Err(ArgError::NullList);
    }
    let count = usize::try_from(argc).map_err(|_| ArgError::NegativeCount(argc.into()))?;
    if count > MAX_ARGS {
        return Err(ArgError::TooMany(argc.into()));
    }
    let mut args = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: `argv` holds `argc` pointers and `i < argc`.
        let arg = unsafe { *argv.add(i) };
        if arg.is_null() {
            return Err(ArgError::NullArg(i + 1));
        }
        // SAFETY: `arg` is a NUL-terminated string; `strnlen` stops at its NUL or after
        // `MAX_ARG_BYTES` bytes, whichever comes first, so it never reads past it. A
        // longer argument is cut there: what a client sent may be that long, and the
        // oracle must still be asked (the request line is shortened to fit later).
        let len = unsafe { libc::strnlen(arg.cast::<c_char>(), MAX_ARG_BYTES) };
        // SAFETY: the `len` bytes before the NUL (or the limit) are readable and
        // unchanged for the call.
        args.push(unsafe { std::slice::from_raw_parts(arg, len) });
    }
    Ok(args)
}

/// Copies `text` into this thread's answer buffer, NUL-terminated, and points at it.
fn store_answer(text: &str) -> *mut c_uchar {
    ANSWER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        // A NUL would cut the answer short; replies with one are refused before this.
        buffer.extend(text.bytes().map(|b| if b == 0 { b' ' } else { b }));
        buffer.push(0);
        buffer.as_mut_ptr()
    })
}

/// The fixed answer after a caught panic: static, so that nothing more can go wrong.
fn panic_fallback(function: Function, local: Option<LocalResult>) -> *mut c_uchar {
    let text: &'static std::ffi::CStr = match (function, calls::on_error(), local) {
        (Function::Configure, _, _) => c"",
        (Function::Check, OnError::Accept, _) => c"accept",
        (Function::Check, OnError::Defer, _) => verdict::CHECK_PANIC_DEFER,
        (Function::Auth, OnError::Accept, Some(LocalResult::Ok)) => c"yes",
        (Function::Auth, OnError::Accept, _) => c"no",
        (Function::Auth, OnError::Defer, _) => c"authentication check unavailable",
    };
    // Exim only reads the answer (it copies it), so handing out a static is fine.
    text.as_ptr().cast::<c_uchar>().cast_mut()
}

/// Sends panic messages to Exim's main log instead of stderr (which may be the SMTP
/// client's connection under `-bs`); outside Exim the previous hook keeps working.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if exim().log_write.is_some() {
                exim().log(&format!(
                    "internal error, answered with the fallback: {info}"
                ));
            } else {
                previous(info);
            }
        }));
    });
}

/// Exim's `void log_write(unsigned int selector, int flags, const char *format, ...)`.
type LogWrite = unsafe extern "C" fn(c_uint, c_int, *const c_char, ...);

/// Exim's `uschar *expand_string(uschar *string)`.
type ExpandString = unsafe extern "C" fn(*const c_uchar) -> *mut c_uchar;

/// Exim's functions, as found in the running process.
struct LoadedExim {
    /// `log_write`, when the library runs inside Exim.
    log_write: Option<LogWrite>,
    /// `expand_string`, when the library runs inside Exim.
    expand_string: Option<ExpandString>,
}

/// Exim's functions, looked up once per process.
fn exim() -> &'static LoadedExim {
    static EXIM: OnceLock<LoadedExim> = OnceLock::new();
    EXIM.get_or_init(|| {
        // SAFETY: `dlsym` only looks a NUL-terminated name up in the global scope.
        let log = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"log_write".as_ptr()) };
        // SAFETY: as above.
        let expand = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"expand_string".as_ptr()) };
        LoadedExim {
            // SAFETY: in an Exim process (the only one that loads this library) the global
            // `log_write` is the function declared in `local_scan.h`, with this signature.
            log_write: (!log.is_null())
                .then(|| unsafe { std::mem::transmute::<*mut c_void, LogWrite>(log) }),
            // SAFETY: as above, for `expand_string`.
            expand_string: (!expand.is_null())
                .then(|| unsafe { std::mem::transmute::<*mut c_void, ExpandString>(expand) }),
        }
    })
}

impl Exim for LoadedExim {
    fn expand(&self, expression: &str, max_bytes: usize) -> Option<String> {
        let expand_string = self.expand_string?;
        let expression = CString::new(expression).ok()?;
        // SAFETY: `expand_string` reads the NUL-terminated expression (it does not keep or
        // change it) and returns null or a NUL-terminated string in Exim's store, valid at
        // least until this call returns to Exim.
        let result = unsafe { expand_string(expression.as_ptr().cast::<c_uchar>()) };
        if result.is_null() {
            return None;
        }
        // SAFETY: `result` is NUL-terminated; `strnlen` reads at most `max_bytes` of it.
        let len = unsafe { libc::strnlen(result.cast::<c_char>(), max_bytes) };
        // SAFETY: those `len` bytes are readable; they are copied before returning.
        let bytes = unsafe { std::slice::from_raw_parts(result, len) };
        match std::str::from_utf8(bytes) {
            Ok(text) => Some(text.to_string()),
            // Cut at `max_bytes` in the middle of a character: keep the whole ones.
            Err(e) if len == max_bytes && e.error_len().is_none() => {
                Some(String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned())
            }
            Err(_) => None,
        }
    }

    fn log(&self, message: &str) {
        let Some(log_write) = self.log_write else {
            return;
        };
        // One line: control characters (and so NUL) become spaces.
        let line: String = format!("exim-access: {message}")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let Ok(line) = CString::new(line) else {
            return;
        };
        // SAFETY: `log_write(0, LOG_MAIN, "%s", line)` passes a constant "%s" format with
        // exactly one NUL-terminated string argument, as local_scan.h documents.
        unsafe { log_write(0, status::LOG_MAIN, c"%s".as_ptr(), line.as_ptr()) };
    }
}

/// Connects a Unix stream socket to `path`, waiting at most `timeout` (a full listen
/// queue would otherwise block `connect` forever). The socket is close-on-exec.
///
/// Linux bounds a blocking `connect` on a Unix socket by `SO_SNDTIMEO`, and fails with
/// `EAGAIN` when that runs out.
pub(crate) fn connect_unix(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: `sockaddr_un` is plain data; all zeroes is a valid (empty) value.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= address.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long or holding a nul byte",
        ));
    }
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, from) in address.sun_path.iter_mut().zip(bytes) {
        *to = *from as c_char;
    }
    // SAFETY: `socket` takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A zero timeval means "no timeout": never send one.
    let micros = timeout.as_micros().clamp(1, i64::MAX as u128) as i64;
    let limit = libc::timeval {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_usec: (micros % 1_000_000) as libc::suseconds_t,
    };
    // SAFETY: `limit` is a valid timeval and the length given is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const limit).cast::<c_void>(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let length = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: `address` is a valid sockaddr_un whose first `length` bytes hold the family
    // and the NUL-terminated path.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const address).cast::<libc::sockaddr>(),
            length as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

/// Writes `data` to `stream` with `send(MSG_NOSIGNAL)`: a peer that went away gives
/// `EPIPE` instead of a SIGPIPE that would kill the Exim process.
pub(crate) fn send_nosignal(stream: &UnixStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a valid buffer of `data.len()` bytes; the descriptor is open for
    // as long as `stream` is borrowed.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            data.as_ptr().cast::<c_void>(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::client::tests::{Behaviour, TempSocket, spawn_oracle};
    use std::ffi::CStr;
    use std::os::unix::net::UnixListener;
    use std::ptr;
    use std::time::Instant;

    /// Sets the listen queue length of a test listener (Linux lets `listen` run again).
    pub(crate) fn set_backlog(listener: &UnixListener, backlog: c_int) {
        // SAFETY: `listen` on a descriptor the listener owns; no pointers.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
        assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
    }

    /// The signature of the three exports.
    type Export = unsafe extern "C" fn(*mut *mut c_uchar, c_int, *const *const c_uchar) -> c_int;

    /// Calls an export as Exim does, with C strings built from `args`.
    fn invoke(export: Export, args: &[&[u8]]) -> (c_int, String) {
        let owned: Vec<CString> = args.iter().map(|a| CString::new(*a).unwrap()).collect();
        let pointers: Vec<*const c_uchar> = owned.iter().map(|c| c.as_ptr().cast()).collect();
        invoke_raw(export, pointers.len() as c_int, pointers.as_ptr())
    }

    /// Calls an export with raw arguments and reads its answer.
    fn invoke_raw(export: Export, argc: c_int, argv: *const *const c_uchar) -> (c_int, String) {
        let mut answer: *mut c_uchar = ptr::null_mut();
        // SAFETY: `answer` is writable; argv is whatever the test wants to check, within
        // the export's contract (null pointers are allowed there).
        let rc = unsafe { export(&mut answer, argc, argv) };
        assert!(!answer.is_null(), "an answer is always given");
        // SAFETY: the export returned a NUL-terminated answer, valid until the next call.
        let text = unsafe { CStr::from_ptr(answer.cast::<c_char>()) };
        (rc, text.to_str().unwrap().to_string())
    }

    /// Points this thread's library at `sock` with a short timeout.
    fn configure_for(sock: &TempSocket, on_error: &str, timeout_ms: u64) {
        calls::reset();
        let socket = format!("socket={}", sock.path.display());
        let timeout = format!("timeout_ms={timeout_ms}");
        let on_error = format!("on_error={on_error}");
        let (rc, text) = invoke(
            configure,
            &[socket.as_bytes(), timeout.as_bytes(), on_error.as_bytes()],
        );
        assert_eq!((rc, text.as_str()), (status::OK, ""));
    }

    #[test]
    fn exim_functions_are_absent_outside_exim() {
        assert!(exim().log_write.is_none());
        assert!(exim().expand_string.is_none());
        assert_eq!(exim().expand("$sender_helo_name", 10), None);
        exim().log("goes nowhere");
    }

    #[test]
    fn bad_pointers_and_counts_get_the_fallback() {
        let sock = TempSocket::new("ffi-pointers");
        configure_for(&sock, "defer", 1000);
        let defer = verdict::CHECK_FALLBACK_DEFER;
        assert_eq!(
            invoke_raw(check, 1, ptr::null()),
            (status::OK, defer.into())
        );
        let ping: *const c_uchar = c"ping".as_ptr().cast();
        let eight = [ping; 8];
        assert_eq!(
            invoke_raw(check, 8, eight.as_ptr()),
            (status::OK, defer.into())
        );
        assert_eq!(
            invoke_raw(check, -1, eight.as_ptr()),
            (status::OK, defer.into())
        );
        let with_null = [ping, ptr::null()];
        assert_eq!(
            invoke_raw(check, 2, with_null.as_ptr()),
            (status::OK, defer.into())
        );
        let (rc, text) = invoke(auth, &[b"user=a", b"result=ok", b"x"]);
        assert_eq!((rc, text.as_str()), (status::OK, verdict::AUTH_UNAVAILABLE));
        // SAFETY: a null result pointer is what is being checked; argv is valid.
        let rc = unsafe { check(ptr::null_mut(), 1, [ping].as_ptr()) };
        assert_eq!(rc, status::ERROR);
    }

    #[test]
    fn long_empty_and_non_utf8_arguments_still_ask_the_oracle() {
        let sock = TempSocket::new("ffi-always-asks");
        let requests = spawn_oracle(&sock.path, Behaviour::Serve, |_| "deny no".into());
        configure_for(&sock, "accept", 2000);
        let long = [b"user=".as_slice(), &[b'x'; 3 * MAX_ARG_BYTES]].concat();
        assert_eq!(invoke(check, &[b"rcpt", &long, b"rcpt=a@b"]).1, "deny no");
        let line = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            line.len() <= access_wire::MAX_LINE_BYTES + 1,
            "{}",
            line.len()
        );
        let request = access_wire::parse_request(line.trim_end().as_bytes()).unwrap();
        assert!(request.get("user").unwrap().starts_with("xxxx"));
        assert_eq!(request.get("rcpt"), Some("a@b"));

        assert_eq!(
            invoke(check, &[b"mail", b"user=caf\xe9", b"sender=b\xffob@x"]).1,
            "deny no"
        );
        let line = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        let request = access_wire::parse_request(line.trim_end().as_bytes()).unwrap();
        assert_eq!(request.get("user"), Some("caf\\xe9"));
        assert_eq!(request.get("sender"), Some("b\\xffob@x"));

        assert_eq!(
            invoke(auth, &[b"user=", b"result=ok", b"password=p"]).1,
            "no"
        );
        let line = requests.recv_timeout(Duration::from_secs(5)).unwrap();
        let request = access_wire::parse_request(line.trim_end().as_bytes()).unwrap();
        assert_eq!(request.get("user"), Some(""));
        assert!(request.get("pwhash").is_some());
        // A Latin-1 password is hashed, never refused.
        let (_, text) = invoke(auth, &[b"user=a", b"password=caf\xe9", b"result=ok"]);
        assert_eq!(text, "no", "the oracle said deny");
    }

    #[test]
    fn awkward_values_reach_the_oracle_intact() {
        let sock = TempSocket::new("ffi-intact");
        let requests = spawn_oracle(&sock.path, Behaviour::Serve, |_| "accept".into());
        configure_for(&sock, "accept", 2000);
        let mut user = String::new();
        while user.len() < 3000 {
            user.push_str("a \"quoted\" name\\ with\nnew\r\nlines\tand ünïcödé; ");
        }
        let user_arg = format!("user={user}");
        let (rc, text) = invoke(
            check,
            &[
                b"auth",
                user_arg.as_bytes(),
                b"ip=192.0.2.1",
                b"+result=ok mech=PLAIN",
            ],
        );
        assert_eq!((rc, text.as_str()), (status::OK, "accept"));
        let line = requests.recv().unwrap();
        let request = access_wire::parse_request(line.as_bytes()).unwrap();
        assert_eq!(request.verb, "auth");
        assert_eq!(request.get("user"), Some(user.as_str()));
        assert_eq!(request.get("result"), Some("ok"));
        assert_eq!(request.get("mech"), Some("PLAIN"));
    }

    #[test]
    fn a_silent_oracle_cannot_hang_the_call() {
        let sock = TempSocket::new("ffi-silent");
        let _requests = spawn_oracle(&sock.path, Behaviour::Silent, |_| String::new());
        configure_for(&sock, "defer", 200);
        let started = Instant::now();
        let (rc, text) = invoke(check, &[b"rcpt", b"user=a", b"ip=192.0.2.1"]);
        let elapsed = started.elapsed();
        assert_eq!(
            (rc, text.as_str()),
            (status::OK, verdict::CHECK_FALLBACK_DEFER)
        );
        assert!(
            elapsed < Duration::from_millis(200) + Duration::from_secs(3),
            "{elapsed:?}"
        );
        let (_, text) = invoke(auth, &[b"user=a", b"result=ok"]);
        assert_eq!(text, verdict::AUTH_UNAVAILABLE);
    }

    #[test]
    fn missing_socket_and_reconnects_through_the_exports() {
        let sock = TempSocket::new("ffi-reconnect");
        configure_for(&sock, "accept", 1000);
        assert_eq!(invoke(check, &[b"ping"]).1, "accept", "no socket yet");
        let _requests = spawn_oracle(&sock.path, Behaviour::OneReplyThenClose, |_| "pong".into());
        for _ in 0..3 {
            assert_eq!(invoke(check, &[b"ping"]).1, "pong");
        }
    }

    #[test]
    fn a_panic_is_caught_and_answered_with_the_fixed_fallback() {
        let sock = TempSocket::new("ffi-panic");
        configure_for(&sock, "accept", 1000);
        calls::panic_next_call();
        assert_eq!(invoke(check, &[b"ping"]), (status::OK, "accept".into()));
        calls::panic_next_call();
        assert_eq!(invoke(auth, &[b"result=ok"]).1, "yes");
        calls::panic_next_call();
        assert_eq!(invoke(auth, &[b"result=fail"]).1, "no");
        configure_for(&sock, "defer", 1000);
        calls::panic_next_call();
        let defer = verdict::CHECK_PANIC_DEFER.to_str().unwrap();
        assert_eq!(invoke(check, &[b"ping"]).1, defer);
        calls::panic_next_call();
        assert_eq!(invoke(auth, &[b"result=ok"]).1, verdict::AUTH_UNAVAILABLE);
        calls::panic_next_call();
        assert_eq!(
            invoke(configure, &[b"on_error=accept"]),
            (status::OK, String::new())
        );
        assert_eq!(
            calls::on_error(),
            OnError::Defer,
            "the panicking call changed nothing"
        );
        // And the library still works afterwards.
        assert_eq!(invoke(check, &[b"ping"]).1, verdict::CHECK_FALLBACK_DEFER);
    }

    #[test]
    fn the_answer_buffer_holds_until_the_next_call() {
        let sock = TempSocket::new("ffi-buffer");
        configure_for(&sock, "defer", 1000);
        let args = [c"ping".as_ptr().cast::<c_uchar>()];
        let mut first: *mut c_uchar = ptr::null_mut();
        // SAFETY: valid result pointer and argument array.
        assert_eq!(unsafe { check(&mut first, 1, args.as_ptr()) }, status::OK);
        // SAFETY: the answer stays valid until the next call on this thread.
        let text = unsafe { CStr::from_ptr(first.cast::<c_char>()) };
        assert_eq!(text.to_str().unwrap(), verdict::CHECK_FALLBACK_DEFER);
    }
}
