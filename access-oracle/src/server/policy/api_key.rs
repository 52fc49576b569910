//! The policy endpoint's API key, checked in constant time.
//!
//! Dovecot sends `auth_policy_server_api_header` as one header line (`X-API-Key: <key>`
//! by convention; a value without `:` is sent as `X-API-Key`). The oracle keeps only
//! the SHA-256 of the expected key and compares the SHA-256 of what a request presents
//! with it, byte by byte without an early exit: the time taken says nothing about how
//! much of a guess was right, nor how long the key is.

use axum::http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

/// The header and the digest of the key it must carry.
#[derive(Clone)]
pub struct ApiKey {
    header: HeaderName,
    digest: [u8; 32],
}

/// What a request presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The right key.
    Right,
    /// A key, but not the right one.
    Wrong,
    /// No header of that name.
    Missing,
}

impl ApiKey {
    /// The key `key`, expected in header `header`.
    pub fn new(header: &str, key: &str) -> Result<ApiKey, String> {
        let header = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("{header:?} is not an HTTP header name"))?;
        Ok(ApiKey {
            header,
            digest: Sha256::digest(key.trim().as_bytes()).into(),
        })
    }

    /// The header's name (lowercase), for log lines.
    pub fn header(&self) -> &str {
        self.header.as_str()
    }

    /// Checks the request's headers. Only the first header of the name counts.
    pub fn check(&self, headers: &HeaderMap) -> Presented {
        let Some(value) = headers.get(&self.header) else {
            return Presented::Missing;
        };
        // HTTP parsers strip the spaces around a value; Dovecot's `Name: key` arrives
        // as `key`, but be sure.
        let presented = value.as_bytes().trim_ascii();
        let digest: [u8; 32] = Sha256::digest(presented).into();
        if same(&digest, &self.digest) {
            Presented::Right
        } else {
            Presented::Wrong
        }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// Whether two digests are equal, looking at every byte whatever the first difference.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn the_right_key_in_the_right_header_passes() {
        let k = ApiKey::new("X-API-Key", "0123456789abcdef-secret").unwrap();
        assert_eq!(k.header(), "x-api-key");
        assert_eq!(
            k.check(&headers("x-api-key", "0123456789abcdef-secret")),
            Presented::Right
        );
        assert_eq!(
            k.check(&headers("X-Api-Key", " 0123456789abcdef-secret ")),
            Presented::Right,
            "header names ignore case; spaces around the value do not count"
        );
    }

    #[test]
    fn wrong_and_missing_keys_are_told_apart() {
        let k = ApiKey::new("X-API-Key", "0123456789abcdef-secret").unwrap();
        assert_eq!(
            k.check(&headers("x-api-key", "0123456789abcdef-secreT")),
            Presented::Wrong
        );
        assert_eq!(
            k.check(&headers("x-api-key", "0123456789abcdef-secret-and-more")),
            Presented::Wrong
        );
        assert_eq!(k.check(&headers("x-api-key", "")), Presented::Wrong);
        assert_eq!(
            k.check(&headers("authorization", "0123456789abcdef-secret")),
            Presented::Missing
        );
    }

    #[test]
    fn basic_authorization_works_as_a_key() {
        // Dovecot: auth_policy_server_api_header = Authorization: Basic dXNlcjpwYXNzd29yZA==
        let k = ApiKey::new("Authorization", "Basic dXNlcjpwYXNzd29yZA==").unwrap();
        assert_eq!(
            k.check(&headers("authorization", "Basic dXNlcjpwYXNzd29yZA==")),
            Presented::Right
        );
        assert!(
            !format!("{k:?}").contains("dXNlcj"),
            "Debug shows no key material"
        );
    }

    #[test]
    fn digests_compare_on_every_byte() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(same(&a, &b));
        b[31] ^= 1;
        assert!(!same(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!same(&a, &b));
    }
}
