//! The body of the `dlfunc_abi` target: `libexim_access.so`'s three exports called
//! through their C ABI, as Exim's `${dlfunc}` calls them.
//!
//! The input is read as a sequence of calls (see [`dlfunc_abi`]). Each call gets a
//! freshly built `argv` of `argc` entries (0 to [`MAX_FUZZ_ARGS`], more than the
//! library's limit of 7), each a null pointer or a NUL-terminated C string: empty, short
//! bytes (any, not UTF-8 either), a `key=value` the library knows, or megabytes long.
//! No oracle listens: every `socket=` points at a path that does not exist, so each call
//! ends at once through `on_error`.

use std::ffi::{CStr, CString, c_char, c_int, c_uchar};
use std::path::PathBuf;
use std::ptr;
use std::sync::LazyLock;

/// The most arguments one call gets (the library refuses more than 7).
pub const MAX_FUZZ_ARGS: usize = 10;

/// Exim's return codes (`local_scan.h`): `OK`, `DEFER`, `FAIL`, `ERROR`.
const ALLOWED_CODES: [c_int; 4] = [0, 1, 2, 3];

/// Exim's `ERROR`, the answer to a null result pointer.
const ERROR: c_int = 3;

/// The longest answer accepted: the library answers one reply line.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The signature of the exports: `int f(uschar **yield, int argc, uschar *argv[])`.
type Export = unsafe extern "C" fn(*mut *mut c_uchar, c_int, *const *const c_uchar) -> c_int;

/// The exports, in the order the input's function byte picks them.
const EXPORTS: [(&str, Export); 3] = [
    ("configure", exim_access::configure),
    ("check", exim_access::check),
    ("auth", exim_access::auth),
];

/// Words the library reads, to start a `key=value` argument with.
const WORDS: &[&[u8]] = &[
    b"ping",
    b"auth",
    b"mail",
    b"rcpt",
    b"data",
    b"connect",
    b"login",
    b"user=",
    b"ip=",
    b"result=ok",
    b"result=fail",
    b"password=",
    b"pwhash=",
    b"sender=",
    b"rcpt=",
    b"helo=",
    b"mech=",
    b"tls=",
    b"port=",
    b"+",
    b"+user=\"a b\" ip=",
    b"timeout_ms=",
    b"on_error=",
    b"hash_nonce=",
    b"socket=",
];

/// A socket path under the temporary directory that nothing creates.
static ABSENT_SOCKET: LazyLock<CString> = LazyLock::new(|| {
    let path: PathBuf = std::env::temp_dir()
        .join(format!("exim-access-fuzz-{}", std::process::id()))
        .join("absent.sock");
    let arg = format!("socket={}", path.display());
    CString::new(arg).expect("a temporary path holds no NUL")
});

/// One argument as the input describes it.
enum Arg {
    /// A null pointer in `argv`.
    Null,
    /// A C string (without its NUL, which `CString` adds).
    Text(CString),
}

/// Reads input bytes one at a time; 0 once they run out.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// A C string of `bytes` up to the first NUL, as C reads it.
fn c_string(bytes: &[u8]) -> CString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    CString::new(&bytes[..end]).expect("cut at the first NUL")
}

/// One argument: a kind byte, then what that kind needs.
fn read_arg(input: &mut Input<'_>) -> Arg {
    match input.byte() % 5 {
        0 => Arg::Null,
        1 => Arg::Text(CString::default()),
        2 => {
            let len = usize::from(input.byte());
            Arg::Text(c_string(input.bytes(len)))
        }
        3 => {
            // Megabytes: a short prefix, then 1 to 4 MiB of one byte.
            let len = usize::from(input.byte() % 16);
            let mut text = input.bytes(len).to_vec();
            let mebibytes = usize::from(input.byte() % 4) + 1;
            let fill = match input.byte() {
                0 => b'x',
                b => b,
            };
            text.truncate(text.iter().position(|&b| b == 0).unwrap_or(text.len()));
            text.resize(text.len() + (mebibytes << 20), fill);
            Arg::Text(CString::new(text).expect("no NUL: cut before, fill is not 0"))
        }
        _ => {
            let word = WORDS[usize::from(input.byte()) % WORDS.len()];
            let len = usize::from(input.byte() % 64);
            let mut text = word.to_vec();
            text.extend_from_slice(input.bytes(len));
            Arg::Text(c_string(&text))
        }
    }
}

/// Calls `export` with `args` (and a null result pointer when `null_yield`) and checks
/// what comes back.
fn call(name: &str, export: Export, args: &[Arg], null_yield: bool) {
    let pointers: Vec<*const c_uchar> = args
        .iter()
        .map(|arg| match arg {
            Arg::Null => ptr::null(),
            Arg::Text(text) => text.as_ptr().cast::<c_uchar>(),
        })
        .collect();
    let argc = c_int::try_from(pointers.len()).expect("at most MAX_FUZZ_ARGS");
    let mut answer: *mut c_uchar = ptr::null_mut();
    let yield_: *mut *mut c_uchar = if null_yield {
        ptr::null_mut()
    } else {
        &raw mut answer
    };
    // SAFETY: the `${dlfunc}` contract: `yield_` is null or points to a writable pointer;
    // `argv` holds `argc` pointers, each null or to a NUL-terminated string (`args`
    // owns them) that stays unchanged during the call.
    let rc = unsafe { export(yield_, argc, pointers.as_ptr()) };
    assert!(
        ALLOWED_CODES.contains(&rc),
        "{name} with {argc} arguments returned {rc}"
    );
    if null_yield {
        assert_eq!(rc, ERROR, "{name} with a null result pointer returned {rc}");
        return;
    }
    if rc == 0 {
        assert!(
            !answer.is_null(),
            "{name} with {argc} arguments returned OK without an answer"
        );
    }
    if !answer.is_null() {
        // SAFETY: the export's contract: a non-null `*yield` is a NUL-terminated string
        // that stays valid until the next call on this thread.
        let text = unsafe { CStr::from_ptr(answer.cast::<c_char>()) };
        assert!(
            text.to_bytes().len() <= MAX_ANSWER_BYTES,
            "{name}: an answer of {} bytes",
            text.to_bytes().len()
        );
    }
}

/// libexim_access.so's `configure`, `check` and `auth` called through their C ABI.
///
/// The input is a sequence of calls. Each starts with a function byte (its value modulo
/// 3 picks the export; 255 passes a null result pointer) and an argument count byte
/// (modulo 11), then each argument: a kind byte (modulo 5: null pointer, empty string,
/// a length byte and that many bytes, megabytes of one byte after a short prefix, or one
/// of the library's words followed by up to 63 bytes), then what the kind needs. A
/// string is cut at its first NUL, as C would read it. Before the calls, `configure`
/// points the library at a socket path that does not exist; a `configure` argument
/// naming a socket is replaced by that path, so no call ever reaches a real oracle.
///
/// Properties: no crash (in particular no read past a string's NUL or the array); the
/// code returned is `OK`, `DEFER`, `FAIL` or `ERROR`, and `ERROR` for a null result
/// pointer; `*yield` is null or a NUL-terminated string of at most 64 KiB, and not null
/// after `OK`.
pub fn dlfunc_abi(data: &[u8]) {
    let reset = [
        Arg::Text(ABSENT_SOCKET.clone()),
        Arg::Text(c"timeout_ms=50".into()),
        Arg::Text(c"on_error=accept".into()),
    ];
    call("configure", exim_access::configure, &reset, false);
    let mut input = Input { data };
    while !input.data.is_empty() {
        let function = input.byte();
        let (name, export) = EXPORTS[usize::from(function % 3)];
        let argc = usize::from(input.byte()) % (MAX_FUZZ_ARGS + 1);
        let mut args: Vec<Arg> = (0..argc).map(|_| read_arg(&mut input)).collect();
        if name == "configure" {
            for arg in &mut args {
                if let Arg::Text(text) = arg
                    && text
                        .to_bytes()
                        .to_ascii_lowercase()
                        .windows(6)
                        .any(|w| w == b"socket")
                {
                    *arg = Arg::Text(ABSENT_SOCKET.clone());
                }
            }
        }
        call(name, export, &args, function == 255);
    }
}
