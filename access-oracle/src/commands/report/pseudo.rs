//! How names appear in a report: as written, or pseudonymised with a keyed
//! HMAC-SHA256 under a random key made for this one export (the same account or
//! address gets the same pseudonym throughout the export, and another in the next),
//! with addresses optionally cut to their /24 (IPv4) or /48 (IPv6) first.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

/// How accounts, addresses and the other names from the trail are shown.
pub struct Shown {
    /// The export's key when pseudonymising.
    key: Option<[u8; 32]>,
    /// Cut addresses to /24 and /48.
    truncate: bool,
}

impl Shown {
    /// Names as written (addresses cut when `truncate`).
    pub fn plain(truncate: bool) -> Shown {
        Shown {
            key: None,
            truncate,
        }
    }

    /// Pseudonyms under a fresh random key.
    pub fn pseudonymised(truncate: bool) -> anyhow::Result<Shown> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| anyhow::anyhow!("no randomness for the pseudonyms' key: {e}"))?;
        Ok(Shown {
            key: Some(key),
            truncate,
        })
    }

    /// Whether names are pseudonymised.
    pub fn is_pseudonymised(&self) -> bool {
        self.key.is_some()
    }

    fn pseudonym(&self, kind: &str, text: &str) -> Option<String> {
        let key = self.key.as_ref()?;
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(kind.as_bytes());
        m.update(b"\0");
        m.update(text.as_bytes());
        let digest = m.finalize().into_bytes();
        Some(format!("{kind}-{}", hex::encode(&digest[..8])))
    }

    /// An account (accounts are case-insensitive: one pseudonym for every spelling).
    pub fn account(&self, user: &str) -> String {
        self.pseudonym("acct", &user.to_lowercase())
            .unwrap_or_else(|| user.to_string())
    }

    /// An address: cut to its network when asked, then pseudonymised when asked.
    pub fn address(&self, ip: IpAddr) -> String {
        let ip = crate::net::canonical_ip(ip);
        let text = if self.truncate {
            let prefix = if ip.is_ipv4() { 24 } else { 48 };
            IpNet::new(ip, prefix)
                .map(|n| n.trunc().to_string())
                .unwrap_or_else(|_| ip.to_string())
        } else {
            ip.to_string()
        };
        self.pseudonym("addr", &text).unwrap_or(text)
    }

    /// An administrator's name.
    pub fn admin(&self, admin: &str) -> String {
        self.pseudonym("admin", admin)
            .unwrap_or_else(|| admin.to_string())
    }

    /// A client's name (HELO / EHLO, which may be an address literal).
    pub fn client(&self, client: &str) -> String {
        self.pseudonym("client", client)
            .unwrap_or_else(|| client.to_string())
    }

    /// A mailbox's name (which may name a person).
    pub fn mailbox(&self, mailbox: &str) -> String {
        self.pseudonym("mailbox", mailbox)
            .unwrap_or_else(|| mailbox.to_string())
    }

    /// A free text (a reason, an alert's summary): left out when pseudonymising or
    /// truncating addresses, since it quotes accounts and whole addresses.
    pub fn reason(&self, text: &str) -> Option<String> {
        (self.key.is_none() && !self.truncate).then(|| text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_consistent_within_an_export_and_differ_between_exports() {
        let a = Shown::pseudonymised(false).unwrap();
        let b = Shown::pseudonymised(false).unwrap();
        assert_eq!(
            a.account("Alice@Example.org"),
            a.account("alice@example.org")
        );
        assert_ne!(
            a.account("alice@example.org"),
            b.account("alice@example.org")
        );
        assert!(a.account("alice@example.org").starts_with("acct-"));
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(a.address(ip), a.address(ip));
        assert!(!a.address(ip).contains("192.0.2"));
        assert!(a.reason("alice from 192.0.2.7").is_none());
    }

    #[test]
    fn addresses_are_cut_to_their_network_before_hashing_or_in_place() {
        let plain = Shown::plain(true);
        assert_eq!(plain.address("192.0.2.7".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(
            plain.address("2001:db8:1:2::5".parse().unwrap()),
            "2001:db8:1::/48"
        );
        assert_eq!(
            plain.address("::ffff:192.0.2.9".parse().unwrap()),
            "192.0.2.0/24"
        );
        let p = Shown::pseudonymised(true).unwrap();
        assert_eq!(
            p.address("192.0.2.7".parse().unwrap()),
            p.address("192.0.2.200".parse().unwrap())
        );
        assert_eq!(
            Shown::plain(false).address("192.0.2.7".parse().unwrap()),
            "192.0.2.7"
        );
    }
}
