//! Addresses as the oracle keys them. A leaf: every layer may use it.
//!
//! Exim and Dovecot may report an IPv4 client on a dual-stack socket as an IPv4-mapped
//! IPv6 address (`::ffff:192.0.2.1`); the protocol, the log parsers and the enrichment
//! all unmap it here, so one client is one address everywhere.

use std::net::IpAddr;

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) turned into its IPv4 address,
/// which is how Exim and Dovecot may report an IPv4 client on a dual-stack socket.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ip_unmaps_ipv4_in_ipv6_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(canonical_ip(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical_ip(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical_ip(ip("2001:db8::1")), ip("2001:db8::1"));
        // IPv4-compatible (deprecated ::a.b.c.d) is not IPv4-mapped.
        assert_eq!(canonical_ip(ip("::192.0.2.1")), ip("::192.0.2.1"));
    }
}
