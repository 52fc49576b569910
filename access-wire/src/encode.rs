//! Writing values so that the oracle reads back exactly the bytes that were meant.

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
/// `\r`; every other character is written as it is, as Exim's `${quote:...}` does.
/// A NUL cannot be represented and is written as `\0`, which the tokenizer refuses: the
/// caller should refuse such values before encoding them.
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
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('"');
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
        ];
        for (v, want) in cases {
            let mut s = String::new();
            encode_value(&mut s, v);
            assert_eq!(s, want, "value {v:?}");
        }
    }
}
