//! The one text form of a value, whatever bytes it arrived as.
//!
//! What an SMTP client sends (an AUTH user name, a MAIL FROM address, a RCPT) is bytes:
//! Exim passes them on without checking that they are UTF-8, and a NUL can reach the
//! oracle through Dovecot's JSON (`\u0000`). None of that may decide whether a check
//! happens, so such a value is never refused: both ends carry it losslessly and the
//! oracle keys its state on one text form of it:
//!
//! * valid UTF-8 without NUL is itself;
//! * otherwise every byte that is not part of a valid UTF-8 sequence, and every NUL, is
//!   written as `\xHH` (two lowercase hex digits), the rest as it is.
//!
//! On the wire, inside a quoted value, `\xHH` is an escape for the byte `HH`
//! ([`crate::encode_bytes`] writes it, the tokenizer reads it), so any byte string
//! travels intact and arrives as its text form.
//!
//! The text form is plain ASCII where it differs from the input, safe to key on, to log
//! and to print. Two inputs share a text form only when one holds the literal characters
//! `\xHH` where the other holds that byte; then their counts are merged, which can only
//! make a rule trip earlier, never let anything through.

use std::borrow::Cow;

/// The text form of `bytes` (see the module documentation): borrowed when the bytes are
/// valid UTF-8 without NUL, which is the common case.
pub fn text_from_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.as_bytes().contains(&0) => Cow::Borrowed(text),
        _ => Cow::Owned(escape_bytes(bytes)),
    }
}

/// The text form of a string: itself unless it holds a NUL, which becomes `\x00`.
pub fn text_from_str(text: &str) -> Cow<'_, str> {
    text_from_bytes(text.as_bytes())
}

/// [`text_from_bytes`] for an owned buffer, without copying valid UTF-8.
pub fn text_from_vec(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) if !text.as_bytes().contains(&0) => text,
        Ok(text) => escape_bytes(text.as_bytes()),
        Err(e) => escape_bytes(e.as_bytes()),
    }
}

/// Writes every invalid byte and every NUL of `bytes` as `\xHH`.
fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for part in chunk.valid().split('\0').enumerate() {
            if part.0 > 0 {
                push_hex_escape(&mut out, 0);
            }
            out.push_str(part.1);
        }
        for &b in chunk.invalid() {
            push_hex_escape(&mut out, b);
        }
    }
    out
}

/// Appends `\xHH` for `byte`.
pub(crate) fn push_hex_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xf)] as char);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_borrowed() {
        assert!(matches!(text_from_bytes(b"alice"), Cow::Borrowed("alice")));
        assert!(matches!(
            text_from_bytes("ünï".as_bytes()),
            Cow::Borrowed(_)
        ));
        assert!(matches!(text_from_bytes(b""), Cow::Borrowed("")));
    }

    #[test]
    fn invalid_bytes_and_nul_become_hex_escapes() {
        assert_eq!(
            text_from_bytes(b"b\xffob@example.com"),
            "b\\xffob@example.com"
        );
        assert_eq!(text_from_bytes(b"a\0b"), "a\\x00b");
        assert_eq!(text_from_bytes(b"\xc3"), "\\xc3");
        assert_eq!(text_from_bytes(b"\xc3\xa9\xc3"), "é\\xc3");
        assert_eq!(text_from_str("x\0"), "x\\x00");
        assert_eq!(text_from_vec(b"\xfe\0".to_vec()), "\\xfe\\x00");
        assert_eq!(text_from_vec(b"ok".to_vec()), "ok");
    }

    #[test]
    fn distinct_byte_strings_keep_distinct_text() {
        let inputs: [&[u8]; 6] = [b"a\xff", b"a\xfe", b"a", b"a\0", b"a\xff\xff", b"\xffa"];
        let texts: std::collections::HashSet<_> =
            inputs.iter().map(|b| text_from_bytes(b)).collect();
        assert_eq!(texts.len(), inputs.len());
    }
}
