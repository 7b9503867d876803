//! Who is calling: the client address, honouring `X-Forwarded-For` and
//! `Forwarded` only from trusted proxies.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, Request};
use ipnet::IpNet;

/// The socket peer of a request, for servers that do not insert axum's
/// `ConnectInfo<SocketAddr>` (a tonic server, a custom hyper loop): insert
/// it into the request's extensions before the mesh layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The socket peer: axum's `ConnectInfo`, or a [`PeerAddr`].
pub(crate) fn peer<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| req.extensions().get::<PeerAddr>().map(|p| p.0.ip()))
}

fn trusted(ip: IpAddr, nets: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// Parses one address of a forwarding header: `1.2.3.4`, `1.2.3.4:80`,
/// `[::1]`, `[::1]:80`, `"[::1]:80"`, `::1`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// The addresses a request passed through, client first, from the one
/// header the trusted proxies write (`Forwarded` `for=` values, or
/// `X-Forwarded-For`); the other header is ignored, since a proxy that does
/// not write it passes the client's own through. An unparsable entry
/// (`unknown`, an obfuscated identifier, garbage) ends the chain: nothing to
/// its left can be attributed.
fn forwarded_chain(headers: &HeaderMap, use_forwarded: bool) -> Vec<Option<IpAddr>> {
    if use_forwarded {
        return headers
            .get_all(http::header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|elem| {
                elem.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then(|| parse_addr(v))
                })
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(parse_addr)
        .collect()
}

/// The client address: the socket peer, unless the peer is a trusted proxy;
/// then the rightmost address in the forwarding chain that is not a trusted
/// proxy (a client can prepend anything, but cannot append after the
/// proxies it passed through). `None` without a known peer.
pub(crate) fn client_ip<B>(
    req: &Request<B>,
    trusted_proxies: &[IpNet],
    use_forwarded: bool,
) -> Option<IpAddr> {
    let peer = peer(req)?;
    if trusted_proxies.is_empty() || !trusted(peer, trusted_proxies) {
        return Some(peer);
    }
    let mut client = peer;
    for hop in forwarded_chain(req.headers(), use_forwarded)
        .into_iter()
        .rev()
    {
        match hop {
            Some(ip) => {
                client = ip;
                if !trusted(ip, trusted_proxies) {
                    break;
                }
            }
            None => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = b.body(()).unwrap();
        r.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        r
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_sends() {
        let t = nets(&["10.0.0.0/8"]);
        let r = req("203.0.113.7:5000", &[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(
            client_ip(&r, &t, false),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_ip(&r, &[], false),
            Some("203.0.113.7".parse().unwrap())
        );
    }

    #[test]
    fn rightmost_untrusted_address_behind_trusted_proxies() {
        let t = nets(&["10.0.0.0/8"]);
        // client-controlled prefix, real client, then our proxies.
        let r = req(
            "10.0.0.2:1",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.9, 10.0.0.1")],
        );
        assert_eq!(
            client_ip(&r, &t, false),
            Some("198.51.100.9".parse().unwrap())
        );
        let r = req(
            "10.0.0.2:1",
            &[(
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8::1]:443\";proto=https, for=10.0.0.1",
            )],
        );
        assert_eq!(
            client_ip(&r, &t, true),
            Some("2001:db8::1".parse().unwrap())
        );
        // The header the proxies do not write is ignored.
        assert_eq!(client_ip(&r, &t, false), Some("10.0.0.2".parse().unwrap()));
        // Garbage stops the walk at the last trusted hop.
        let r = req(
            "10.0.0.2:1",
            &[("x-forwarded-for", "9.9.9.9, unknown, 10.0.0.1")],
        );
        assert_eq!(client_ip(&r, &t, false), Some("10.0.0.1".parse().unwrap()));
        // No header: the proxy itself.
        let r = req("10.0.0.2:1", &[]);
        assert_eq!(client_ip(&r, &t, false), Some("10.0.0.2".parse().unwrap()));
    }
}
