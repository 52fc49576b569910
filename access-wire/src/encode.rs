//! Writing values so that the oracle reads back exactly the bytes that were meant.

use crate::text::push_hex_escape;

/// Whether `value` can be written bare: no space, `"`, `\`, or control character.
///
/// The empty value is bare (`ip=` is how Exim sends a missing address).
pub fn is_bare(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b > b' ' && b != b'"' && b != b'\\' && b != 0x7f)
}

/// Appends `value` to `out`, bare when possible and double-quoted otherwise.
///
/// Inside quotes `"` and `\` are escaped, newline and carriage return become `\n` and
/// `\r`, a NUL becomes `\x00`; every other character is written as it is, as Exim's
/// `${quote:...}` does.
pub fn encode_value(out: &mut String, value: &str) {
    if is_bare(value) {
        out.push_str(value);
        return;
    }
    out.reserve(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\0' => push_hex_escape(out, 0),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `value`, which may be any bytes, so that the tokenizer reads back exactly them
/// (as their text form, [`crate::text_from_bytes`]): valid UTF-8 as [`encode_value`]
/// writes it, otherwise quoted with every byte that is not part of a valid UTF-8
/// sequence written as the escape `\xHH`.
pub fn encode_bytes(out: &mut String, value: &[u8]) {
    if let Ok(text) = std::str::from_utf8(value) {
        encode_value(out, text);
        return;
    }
    out.reserve(value.len() + 8);
    out.push('"');
    for chunk in value.utf8_chunks() {
        let valid = chunk.valid();
        if !valid.is_empty() {
            let mut quoted = String::with_capacity(valid.len() + 2);
            encode_value(&mut quoted, valid);
            // encode_value wrote the run bare or quoted: keep only its inside.
            let inside = quoted
                .strip_prefix('"')
                .and_then(|q| q.strip_suffix('"'))
                .unwrap_or(&quoted);
            out.push_str(inside);
        }
        for &b in chunk.invalid() {
            push_hex_escape(out, b);
        }
    }
    out.push('"');
}

/// Appends ` key=value` to `out` for a value that may be any bytes ([`encode_bytes`]).
pub fn push_pair_bytes(out: &mut String, key: &str, value: &[u8]) {
    out.push(' ');
    out.push_str(key);
    out.push('=');
    encode_bytes(out, value);
}

/// Appends ` key=value` to `out` (with the leading space), quoting the value as needed.
pub fn push_pair(out: &mut String, key: &str, value: &str) {
    out.push(' ');
    out.push_str(key);
    out.push('=');
    encode_value(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_hex_escaped_inside_quotes() {
        let mut s = String::new();
        encode_bytes(&mut s, b"b\xffob \"x\"@example.com");
        assert_eq!(s, "\"b\\xffob \\\"x\\\"@example.com\"");
        let mut s = String::new();
        encode_bytes(&mut s, b"plain");
        assert_eq!(s, "plain");
        let mut s = String::new();
        encode_bytes(&mut s, b"\xc3");
        assert_eq!(s, "\"\\xc3\"");
    }

    #[test]
    fn bare_values_stay_bare() {
        for v in [
            "",
            "alice",
            "192.0.2.1",
            "2001:db8::1",
            "a@b.example",
            "x=y",
        ] {
            let mut s = String::new();
            encode_value(&mut s, v);
            assert_eq!(s, v);
        }
    }

    #[test]
    fn awkward_values_are_quoted_like_exim_quote() {
        let cases = [
            ("a b", "\"a b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("back\\slash", "\"back\\\\slash\""),
            ("two\nlines\r", "\"two\\nlines\\r\""),
            ("tab\there", "\"tab\there\""),
            ("ünïcödé", "ünïcödé"),
            ("nul\0here", "\"nul\\x00here\""),
        ];
        for (v, want) in cases {
            let mut s = String::new();
            encode_value(&mut s, v);
            assert_eq!(s, want, "value {v:?}");
        }
    }
}
