//! Who is on the other end of a request. The peer's address, unless the peer is one of
//! `CMEK_TRUSTED_PROXIES`: then the client named by the one header those proxies write
//! (`CMEK_FORWARDED_HEADER`: `X-Forwarded-For` by default, or `Forwarded` of RFC 7239),
//! read from the right and skipping further trusted hops, because only the entries our own
//! proxies appended can be believed; whatever a client wrote itself sits further left. The
//! other header is never read (a proxy passes it through as the client sent it), and
//! everyone else's forwarding headers are ignored.

use std::net::{IpAddr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::{self, HeaderMap};
use ipnet::IpNet;

pub use crate::settings::ForwardedHeader;

#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { networks, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// Whether the request came straight from a trusted proxy.
    pub fn from_proxy(&self, req: &HttpRequest) -> bool {
        req.peer_addr().is_some_and(|peer| self.trusts(peer.ip()))
    }

    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = canonical(req.peer_addr()?.ip());
        Some(self.resolve(peer, req.headers()))
    }

    fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => x_forwarded_for(headers),
            ForwardedHeader::Forwarded => forwarded(headers),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.trusts(*ip) => client = *ip,
                Some(ip) => return *ip,
                // An obfuscated or unparseable hop: nothing left of it can be believed.
                None => return client,
            }
        }
        client
    }
}

/// An IPv4 address seen through an IPv6 socket counts as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The `for=` hops of `Forwarded`, leftmost first; `None` for a hop that is not an address
/// (`unknown`, `_hidden`) or an element without `for=`.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(header::FORWARDED)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| name.eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| parse_node(value.trim().trim_matches('"')))
        })
        .collect()
}

/// The hops of `X-Forwarded-For`, leftmost first.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| parse_node(hop.trim()))
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    node.parse::<IpAddr>()
        .or_else(|_| node.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| node.trim_start_matches('[').trim_end_matches(']').parse())
        .ok()
        .map(canonical)
}

/// `scheme://host[:port]` of a URL as browsers send it in `Origin`: lower case, without the
/// scheme's default port.
pub fn origin_of(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_ascii_lowercase();
    };
    let scheme = scheme.to_ascii_lowercase();
    let host = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    let host = match host.strip_suffix(default_port) {
        Some(bare) if !default_port.is_empty() => bare.to_owned(),
        _ => host,
    };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            list.iter().filter_map(|n| n.parse().ok()).collect(),
            ForwardedHeader::XForwardedFor,
        )
    }

    fn forwarded_proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            list.iter().filter_map(|n| n.parse().ok()).collect(),
            ForwardedHeader::Forwarded,
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_claims() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let claimed = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            trusted.resolve(ip("198.51.100.7"), &claimed),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_a_spoofed_entry_further_left_is_ignored() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")]);
        assert_eq!(
            trusted.resolve(ip("10.0.0.1"), &forwarded),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_forwarded_header_the_client_wrote_is_ignored_when_the_proxies_write_xff() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let spoofed = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(trusted.resolve(ip("10.0.0.1"), &spoofed), ip("203.0.113.9"));
    }

    #[test]
    fn the_standard_forwarded_header_is_understood_with_ports_and_ipv6() {
        let trusted = forwarded_proxies(&["10.0.0.1/32"]);
        let forwarded = headers(&[
            ("forwarded", "for=\"[2001:db8::7]:4711\";proto=https"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            trusted.resolve(ip("10.0.0.1"), &forwarded),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn an_unknown_hop_stops_the_walk_at_the_last_trusted_address() {
        let trusted = forwarded_proxies(&["10.0.0.0/8"]);
        let forwarded = headers(&[("forwarded", "for=203.0.113.9, for=unknown")]);
        assert_eq!(trusted.resolve(ip("10.0.0.1"), &forwarded), ip("10.0.0.1"));
    }

    #[test]
    fn origins_compare_as_browsers_send_them() {
        assert_eq!(
            origin_of("https://Console.Example:443/x"),
            "https://console.example"
        );
        assert_eq!(origin_of("http://localhost:8080"), "http://localhost:8080");
        assert_eq!(origin_of("http://host:80"), "http://host");
    }
}
