//! The password hash sent instead of a password: Dovecot's auth policy hash, truncated to
//! 12 bits.
//!
//! A `password=` argument never leaves the Exim process. The oracle only needs to tell
//! "the same wrong password again" (a stale client) from "many different passwords" (a
//! guesser), so it gets what Dovecot sends its policy server with
//! `auth_policy_hash_truncate = 12`: the first 12 bits of
//! SHA-256(nonce ‖ user ‖ `\0` ‖ password), as 4 lowercase hex digits (a value below 4096,
//! e.g. `0945`). With the same nonce in Exim (`configure{hash_nonce=...}`) and in Dovecot
//! (`auth_policy_hash_nonce`), a password repeated over SMTP and IMAP hashes the same.
//!
//! Dovecot (`src/auth/auth-policy.c`, 2.3) hashes the nonce, the login name with its
//! terminating NUL, then the password; `buffer_truncate_rshift_bits` keeps the first
//! `ceil(bits / 8)` bytes of the digest and shifts them right by `8 - bits % 8`, so that
//! the value is the first `bits` bits of the digest as a number; `binary_to_hex` writes
//! those bytes in lowercase hex.

use crate::sha256::Sha256;

/// The nonce used until `configure{hash_nonce=...}` sets one: the same in every Exim
/// process, so that repeated passwords still match up across connections.
pub const DEFAULT_NONCE: &str = "exim-access-default-nonce";

/// How many leading bits of the digest are kept (Dovecot's `auth_policy_hash_truncate`).
pub const TRUNCATE_BITS: u32 = 12;

/// The truncated hash of `password` for `user`, as Dovecot computes it: 4 hex digits.
///
/// The password is taken as bytes: Exim hands over whatever the client sent.
pub fn pwhash(nonce: &str, user: &[u8], password: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(nonce.as_bytes());
    h.update(user);
    h.update(&[0]);
    h.update(password);
    let digest = h.finish();
    // First two bytes as a big-endian number, keeping its top 12 bits.
    let value = u16::from_be_bytes([digest[0], digest[1]]) >> (16 - TRUNCATE_BITS);
    format!("{value:04x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::Digest as _;

    /// Dovecot's `buffer_truncate_rshift_bits` followed by `binary_to_hex`, transcribed
    /// from its C source, to cross-check the shortcut taken in [`pwhash`].
    fn dovecot_truncate_hex(digest: &[u8], bits: usize) -> String {
        let bytes = bits.div_ceil(8);
        let rem = bits % 8;
        let mut buf = digest[..bytes].to_vec();
        if rem > 0 {
            for i in (1..bytes).rev() {
                buf[i] = (buf[i] >> (8 - rem)) + ((buf[i - 1] & (0xff >> rem)) << rem);
            }
            buf[0] >>= 8 - rem;
        }
        buf.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Values checked with coreutils, independently of both Rust implementations:
    /// `printf 'exim-access-default-nonce%s\0%s' alice secret | sha256sum` gives
    /// `a132ed8a...`, whose first 12 bits are `a13`, written `0a13`.
    #[test]
    fn values_checked_with_sha256sum() {
        assert_eq!(pwhash(DEFAULT_NONCE, b"alice", b"secret"), "0a13");
        // printf 'nonce%s\0%s' u p | sha256sum -> 249a9c3c...
        assert_eq!(pwhash("nonce", b"u", b"p"), "0249");
    }

    proptest! {
        /// The shortcut equals Dovecot's byte-shifting code, and always gives 4 hex digits
        /// for a value below 4096.
        #[test]
        fn matches_dovecot_truncation(nonce in ".{0,20}", user in ".{0,40}", password in ".{0,40}") {
            let mut input = Vec::new();
            input.extend_from_slice(nonce.as_bytes());
            input.extend_from_slice(user.as_bytes());
            input.push(0);
            input.extend_from_slice(password.as_bytes());
            let digest = sha2::Sha256::digest(&input);
            let ours = pwhash(&nonce, user.as_bytes(), password.as_bytes());
            prop_assert_eq!(&ours, &dovecot_truncate_hex(&digest, 12));
            prop_assert_eq!(ours.len(), 4);
            prop_assert!(u16::from_str_radix(&ours, 16).unwrap() < 4096);
        }
    }
}
