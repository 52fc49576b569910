//! Text that an outsider controls, made safe to show a person: [`escape_controls`]
//! writes every character that a terminal would act on, rather than show, as a visible
//! escape. Every table and line `ctl` and `audit search` / `audit verify` print for a
//! human goes through it (JSON output does not: serde already escapes control
//! characters as `\u001b`).
//!
//! What is escaped, and how:
//!
//! | characters | written as |
//! |---|---|
//! | C0 controls U+0000..U+001F (ESC, BEL, tab, newline, ...) and DEL U+007F | `\x1b`, `\x07`, `\x09`, `\x0a`, `\x7f` |
//! | C1 controls U+0080..U+009F (CSI U+009B, OSC U+009D, ...) | `\u{9b}`, `\u{9d}` |
//! | Unicode bidirectional controls (`Bidi_Control`): U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069 | `\u{202e}`, ... |
//! | a backslash | `\\` |
//!
//! The backslash is doubled so that the output reads back one way only: a user name
//! spelt with the four characters `\x1b` shows as `\\x1b`, one holding the escape
//! character as `\x1b`. Everything else (letters of any script, punctuation, spaces)
//! is shown as it is.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` is shown as an escape rather than as itself.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}' | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\\')
}

/// `s` with every control character (C0, DEL, C1), every bidirectional control and
/// every backslash written as a visible escape; borrowed when there is none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    let Some(first) = s.find(needs_escape) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// An error and its causes on one line (`error sending request: ...: invalid peer
/// certificate`), each cause once, escaped for a terminal.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    escape_controls(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_it_is() {
        for s in ["", "alice@example.org", "Zoë Ωmega 名前 🙂", "a b-c_d.e+f"] {
            assert!(
                matches!(escape_controls(s), Cow::Borrowed(b) if b == s),
                "{s}"
            );
        }
    }

    #[test]
    fn terminal_sequences_become_visible() {
        assert_eq!(
            escape_controls("evil\x1b]0;pwned\x07user"),
            "evil\\x1b]0;pwned\\x07user"
        );
        assert_eq!(escape_controls("\x1b[2J\x1b[H"), "\\x1b[2J\\x1b[H");
        assert_eq!(escape_controls("a\tb\nc\rd\0"), "a\\x09b\\x0ac\\x0dd\\x00");
        assert_eq!(escape_controls("del\x7f"), "del\\x7f");
        // C1: CSI and OSC as single characters, and the edges of the range.
        assert_eq!(
            escape_controls("\u{9b}2J\u{9d}0;x\u{9c}"),
            "\\u{9b}2J\\u{9d}0;x\\u{9c}"
        );
        assert_eq!(
            escape_controls("\u{80}\u{9f}\u{a0}"),
            "\\u{80}\\u{9f}\u{a0}"
        );
    }

    #[test]
    fn bidirectional_controls_become_visible() {
        assert_eq!(
            escape_controls("user\u{202e}gro.elpmaxe"),
            "user\\u{202e}gro.elpmaxe"
        );
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let shown = escape_controls(&c.to_string()).into_owned();
            assert_eq!(shown, format!("\\u{{{:x}}}", c as u32));
        }
        // Neighbours that are not controls stay.
        assert_eq!(
            escape_controls("\u{2029}\u{2065}\u{206a}"),
            "\u{2029}\u{2065}\u{206a}"
        );
    }

    #[test]
    fn a_backslash_is_doubled_so_the_output_reads_back_one_way() {
        assert_eq!(escape_controls("DOMAIN\\user"), "DOMAIN\\\\user");
        assert_ne!(escape_controls("\\x1b"), escape_controls("\x1b"));
        assert_eq!(escape_controls("\\x1b"), "\\\\x1b");
    }

    #[test]
    fn no_character_that_needs_it_survives() {
        // Every code point up to the end of the bidi range, one string.
        let all: String = (0u32..0x2100).filter_map(char::from_u32).collect();
        let out = escape_controls(&all);
        assert!(
            !out.chars().any(|c| needs_escape(c) && c != '\\'),
            "{out:?}"
        );
        assert!(!out.bytes().any(|b| b < 0x20 || b == 0x7f));
    }
}
