//! Encryption at rest of the trail's records (`[audit] encrypt = true`): who can read
//! the segment files (a backup, a copy on another host) without the key sees when and
//! in which order records were written, not about whom or from where.
//!
//! An encrypted record is still one line of the chain: `{"seq":N,"enc":"<base64>"}`
//! followed by its `chain` value as for any record, so `verify` checks the chain and
//! the order without decrypting, and a trail may hold plain and encrypted records
//! (the setting changed). `enc` is the record's JSON sealed with XChaCha20-Poly1305
//! (24-byte nonce + ciphertext + 16-byte tag), its sequence number bound as associated
//! data so a record cannot be moved to another place of the trail.
//!
//! The cipher's key is derived from the trail's key (HMAC-SHA256 of it over a fixed
//! label): one key file, read by the oracle and the auditors, serves both. Nonces are
//! 16 random bytes drawn when the writer starts plus the record's sequence number:
//! unique for as long as the key is (sequence numbers only repeat after a crash cut
//! records off, and the next writer draws a new prefix).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::record::Record;

/// What the cipher's key is derived with.
const LABEL: &[u8] = b"exim-access audit trail encryption v1";

/// Where an encrypted record's text starts: what a plain record never holds outside
/// its strings (a `"` inside a JSON string is escaped).
const ENC_FIELD: &str = ",\"enc\":\"";

/// Seals and opens records with the trail's key.
pub struct Crypt {
    cipher: XChaCha20Poly1305,
    /// The random part of this writer's nonces.
    prefix: [u8; 16],
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypt")
    }
}

impl Crypt {
    /// The cipher of the trail whose key is `key`.
    pub fn new(key: &[u8]) -> Crypt {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(LABEL);
        let derived = m.finalize().into_bytes();
        let mut prefix = [0u8; 16];
        // Without the system's randomness the time stands in: still unique per start.
        if getrandom::fill(&mut prefix).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            prefix = now.to_le_bytes();
        }
        Crypt {
            cipher: XChaCha20Poly1305::new(&derived),
            prefix,
        }
    }

    /// Appends the encrypted line content of `record` (its `seq` set): `{"seq":N,"enc":"..."}`.
    pub fn seal_into(&self, buf: &mut Vec<u8>, record: &Record) {
        let plain = serde_json::to_vec(record).expect("a record always serializes");
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&self.prefix);
        nonce[16..].copy_from_slice(&record.seq.to_be_bytes());
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &record.seq.to_be_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any record");
        let mut raw = Vec::with_capacity(nonce.len() + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        buf.extend_from_slice(b"{\"seq\":");
        buf.extend_from_slice(itoa::Buffer::new().format(record.seq).as_bytes());
        buf.extend_from_slice(ENC_FIELD.as_bytes());
        buf.extend_from_slice(BASE64.encode(raw).as_bytes());
        buf.extend_from_slice(b"\"}");
    }

    /// The record in an encrypted line's content (as [`encrypted`] found it).
    pub fn open(&self, sealed: &Encrypted<'_>) -> Result<Record, String> {
        let raw = BASE64
            .decode(sealed.enc)
            .map_err(|e| format!("encrypted record {}: not base64: {e}", sealed.seq))?;
        if raw.len() < 24 + 16 {
            return Err(format!("encrypted record {}: too short", sealed.seq));
        }
        let (nonce, body) = raw.split_at(24);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &sealed.seq.to_be_bytes(),
                },
            )
            .map_err(|_| {
                format!(
                    "encrypted record {} does not open with this key (another key, or the record was changed)",
                    sealed.seq
                )
            })?;
        let r: Record = serde_json::from_slice(&plain)
            .map_err(|e| format!("encrypted record {}: not a record inside: {e}", sealed.seq))?;
        if r.seq != sealed.seq {
            return Err(format!(
                "encrypted record {} holds record {}: moved from another place",
                sealed.seq, r.seq
            ));
        }
        Ok(r)
    }
}

/// An encrypted line's content, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encrypted<'a> {
    /// Its sequence number, in the clear.
    pub seq: u64,
    /// The sealed record, base64.
    pub enc: &'a str,
}

/// Whether a line (or its content) holds an encrypted record: its `enc` field cannot
/// appear in a plain record, inside a string or out.
pub fn is_encrypted(line: &str) -> bool {
    line.contains(ENC_FIELD)
}

/// `Some` when `content` (a line without its chain field) is an encrypted record,
/// `Some(Err)` when it looks like one but is not well formed.
pub fn encrypted(content: &str) -> Option<Result<Encrypted<'_>, String>> {
    let rest = content.strip_prefix("{\"seq\":")?;
    let at = rest.find(ENC_FIELD)?;
    let parsed = (|| {
        let seq = rest[..at]
            .parse::<u64>()
            .map_err(|_| "an encrypted record with a bad seq".to_string())?;
        let enc = rest[at + ENC_FIELD.len()..]
            .strip_suffix("\"}")
            .filter(|e| !e.contains('"'))
            .ok_or_else(|| {
                format!("encrypted record {seq}: not of the form {{\"seq\":N,\"enc\":\"...\"}}")
            })?;
        Ok(Encrypted { seq, enc })
    })();
    Some(parsed)
}
