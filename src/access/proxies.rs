//! Who the client is: the peer address, or behind trusted reverse proxies the address
//! they forwarded (`server.trusted_proxies`). Used to count a client's failed admin
//! authentications and to name it in the logs.
//!
//! `X-Forwarded-For` is a list each proxy appends its peer to, so only its end is
//! believable: the client is found by walking it from the right past the proxies this
//! service trusts. Anything left of that address was written by the client itself and
//! proves nothing, so a client cannot pose as another by sending the header.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::{first_problem, BadEntry, Entry};

/// The reverse proxies whose `X-Forwarded-For` is believed. Empty (the default): none,
/// the peer is the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Entry<IpNet>>);

impl TrustedProxies {
    pub fn new<S: Into<String>>(entries: impl IntoIterator<Item = S>) -> Self {
        Self(Entry::all(entries, parse_network))
    }

    /// The first entry that is neither an address nor a CIDR.
    pub(crate) fn first_problem(&self) -> Option<BadEntry<'_>> {
        first_problem(&self.0)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0
            .iter()
            .any(|entry| entry.parsed.as_ref().is_ok_and(|net| net.contains(&ip)))
    }

    /// The client of a request from `peer` carrying the `X-Forwarded-For` values
    /// `forwarded_for` (every such header, in order).
    pub(crate) fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|h| h.split(',')).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // A hop a trusted proxy wrote that is not an address: the proxy that wrote
            // it is as far as the chain can be followed.
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// `10.0.0.0/8`, `fd00::/8`, or one address (`10.1.2.3`: a /32).
fn parse_network(raw: &str) -> Result<IpNet, &'static str> {
    const SHAPE: &str =
        "is not an address or CIDR: write it like 10.0.0.0/8, 192.168.1.10 or fd00::/8";
    raw.parse::<IpNet>()
        .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
        .map(|net| net.trunc())
        .map_err(|_| SHAPE)
}

/// One entry of `X-Forwarded-For`: an address, perhaps with a port (`1.2.3.4:80`,
/// `[::1]:80`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(canonical)
}

/// An IPv4 address reached over IPv6 (`::ffff:10.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(entries: &[&str]) -> TrustedProxies {
        let p = TrustedProxies::new(entries.iter().copied());
        assert_eq!(p.first_problem(), None);
        p
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_the_header_says() {
        let p = TrustedProxies::default();
        assert_eq!(
            p.client(ip("10.0.0.1"), ["1.2.3.4"].into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_last_untrusted_hop() {
        let p = proxies(&["10.0.0.0/8", "::1"]);
        let client = |peer: &str, xff: &[&str]| p.client(ip(peer), xff.iter().copied());
        // nginx on 10.0.0.2 forwarded a client that claimed to be 9.9.9.9.
        assert_eq!(
            client("10.0.0.2", &["9.9.9.9, 203.0.113.7"]),
            ip("203.0.113.7")
        );
        // Two proxies, the header split over two lines, a port on one hop.
        assert_eq!(
            client("::1", &["198.51.100.1", "203.0.113.7:4711, 10.1.1.1"]),
            ip("203.0.113.7")
        );
        // Only proxies in the chain: the first of them.
        assert_eq!(client("10.0.0.2", &["10.0.0.9"]), ip("10.0.0.9"));
        // No header: the proxy itself.
        assert_eq!(client("10.0.0.2", &[]), ip("10.0.0.2"));
        // Garbage written after a trusted hop: follow no further.
        assert_eq!(client("10.0.0.2", &["203.0.113.7, junk"]), ip("10.0.0.2"));
        // An untrusted peer's header is ignored.
        assert_eq!(client("192.0.2.1", &["203.0.113.7"]), ip("192.0.2.1"));
        // IPv4 over IPv6 is the IPv4 address.
        assert_eq!(
            client("::ffff:10.0.0.2", &["203.0.113.7"]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn entries_are_cidrs_or_addresses() {
        let p = TrustedProxies::new(["10.0.0.0/8", "192.168.1.10", "fd00::/8", "10.0.0.0/33"]);
        assert_eq!(p.first_problem().map(|e| e.index), Some(3));
        assert_eq!(
            TrustedProxies::new(["nginx"])
                .first_problem()
                .map(|e| e.index),
            Some(0)
        );
    }
}
