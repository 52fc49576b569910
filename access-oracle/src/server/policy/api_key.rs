//! The policy endpoint's API key, checked in constant time.
//!
//! Dovecot sends `auth_policy_server_api_header` as one header line (`X-API-Key: <key>`
//! by convention; a value without `:` is sent as `X-API-Key`). The oracle keeps only
//! the SHA-256 of the expected key and compares the SHA-256 of what a request presents
//! with it, byte by byte without an early exit: the time taken says nothing about how
//! much of a guess was right, nor how long the key is.

use sha2::{Digest, Sha256};

/// The header and the digest of the key it must carry.
#[derive(Clone)]
pub struct ApiKey {
    /// Lowercase.
    header: Box<str>,
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
        if !is_header_name(header) {
            return Err(format!("{header:?} is not an HTTP header name"));
        }
        Ok(ApiKey {
            header: header.to_ascii_lowercase().into(),
            digest: Sha256::digest(key.trim().as_bytes()).into(),
        })
    }

    /// The header's name (lowercase), for log lines and to look it up in a request.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// Checks the value of the request's first header of that name (`None`: no such
    /// header).
    pub fn check(&self, value: Option<&[u8]>) -> Presented {
        let Some(value) = value else {
            return Presented::Missing;
        };
        // HTTP parsers strip the spaces around a value; Dovecot's `Name: key` arrives
        // as `key`, but be sure.
        let presented = value.trim_ascii();
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

pub use crate::config::policy::is_header_name;

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
    use crate::server::policy::http::Request;

    /// `check` on a request with one header `name: value`, looked up as the endpoint does.
    fn check(k: &ApiKey, name: &str, value: &str) -> Presented {
        let headers = [httparse::Header {
            name,
            value: value.as_bytes(),
        }];
        let request = Request {
            method: "POST",
            path: "/",
            query: None,
            version: 1,
            headers: &headers,
            body: b"",
            keep_alive: true,
        };
        k.check(request.header(k.header()))
    }

    #[test]
    fn the_right_key_in_the_right_header_passes() {
        let k = ApiKey::new("X-API-Key", "0123456789abcdef-secret").unwrap();
        assert_eq!(k.header(), "x-api-key");
        assert!(ApiKey::new("X API Key", "0123456789abcdef-secret").is_err());
        assert!(ApiKey::new("", "0123456789abcdef-secret").is_err());
        assert_eq!(
            check(&k, "x-api-key", "0123456789abcdef-secret"),
            Presented::Right
        );
        assert_eq!(
            check(&k, "X-Api-Key", " 0123456789abcdef-secret "),
            Presented::Right,
            "header names ignore case; spaces around the value do not count"
        );
    }

    #[test]
    fn wrong_and_missing_keys_are_told_apart() {
        let k = ApiKey::new("X-API-Key", "0123456789abcdef-secret").unwrap();
        assert_eq!(
            check(&k, "x-api-key", "0123456789abcdef-secreT"),
            Presented::Wrong
        );
        assert_eq!(
            check(&k, "x-api-key", "0123456789abcdef-secret-and-more"),
            Presented::Wrong
        );
        assert_eq!(check(&k, "x-api-key", ""), Presented::Wrong);
        assert_eq!(
            check(&k, "authorization", "0123456789abcdef-secret"),
            Presented::Missing
        );
    }

    #[test]
    fn basic_authorization_works_as_a_key() {
        // Dovecot: auth_policy_server_api_header = Authorization: Basic dXNlcjpwYXNzd29yZA==
        let k = ApiKey::new("Authorization", "Basic dXNlcjpwYXNzd29yZA==").unwrap();
        assert_eq!(
            check(&k, "authorization", "Basic dXNlcjpwYXNzd29yZA=="),
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
