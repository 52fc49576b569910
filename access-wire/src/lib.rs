//! The exim-access line protocol, shared by both ends so they can never disagree.
//!
//! A request is one line, at most [`MAX_LINE_BYTES`] bytes, ended by `\n` or by the end of
//! input:
//!
//! ```text
//! VERB key=value key="quoted value" ...
//! ```
//!
//! A value is a bare token (no space, `"`, `\` or control character; may be empty) or a
//! double-quoted string with the escapes `\"`, `\\`, `\n` and `\r`. That is exactly what
//! Exim's `${quote:...}` produces, which leaves tabs and other control characters as they
//! are inside the quotes: every byte but newline is accepted there. A value's bytes need
//! not be UTF-8, and a quoted value may also use the escape `\xHH` for any byte: what an
//! SMTP client sent is carried losslessly and arrives as its text form ([`text_from_bytes`]),
//! so it can never make a request unreadable and skip a check.
//!
//! This crate uses `std` only: the Exim library (`exim-dlfunc`) links it and must stay tiny.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod encode;
mod reply;
mod text;
mod tokenize;

pub use encode::{encode_bytes, encode_value, is_bare, push_pair, push_pair_bytes};
pub use reply::{Reply, VERBS};
pub use text::{text_from_bytes, text_from_str, text_from_vec};
pub use tokenize::{Pair, Request, WireError, parse_pairs, parse_request};

/// The longest request line accepted, in bytes, not counting the terminating newline.
pub const MAX_LINE_BYTES: usize = 8192;

/// Whether `key` is a valid key: ASCII letters, digits, `_`, `-` and `.`, not empty.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}
