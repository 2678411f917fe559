//! The guard on every outgoing request to a user-given URL: nothing on
//! this machine or its private networks is reached, whether named
//! directly, through DNS, or by a redirect, unless local requests are
//! allowed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::{redact, Error, Result};

/// Why a URL's host is off limits, if it is: named `localhost`, or an
/// address literal that is not public. As GitLab's URL blocker words it.
pub(super) fn local_target(url: &reqwest::Url) -> Option<&'static str> {
    let host = url.host_str()?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return local_address(ip);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then_some(LOCALHOST_REFUSED)
}

const LOCALHOST_REFUSED: &str = "Requests to localhost are not allowed";
const LOCAL_NETWORK_REFUSED: &str = "Requests to the local network are not allowed";

/// Why an address is off limits, if it is: this machine, a private or
/// shared network, link-local (where cloud metadata services answer), or
/// anything not routable on the internet.
fn local_address(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let loopback = ip.is_loopback() || ip.is_unspecified();
    let local = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT), IETF protocol
                // assignments, benchmarking (used by VPNs), and 240/4.
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let [first, second, ..] = v6.segments();
            v6.is_multicast()
                // Unique local (fc00::/7, AWS's fd00:ec2::254 among them),
                // link-local (fe80::/10), the old site-local (fec0::/10).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // Documentation (2001:db8::/32), Teredo (2001::/32), discard
                // (100::/64), and the rest of ::/8 not unwrapped above.
                || (first == 0x2001 && (second == 0x0db8 || second == 0))
                || first == 0x0100
                || first < 0x0100
        }
    };
    if loopback {
        Some(LOCALHOST_REFUSED)
    } else if local {
        Some(LOCAL_NETWORK_REFUSED)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 one leads to, in the forms that reach IPv4
/// hosts: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64
/// (64:ff9b::/96 and 64:ff9b:1::/48) and 6to4 (2002:AABB:CCDD::/16).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let segments = v6.segments();
    let last = |s: &[u16; 8]| std::net::Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return Some(mapped);
    }
    match segments {
        [0, 0, 0, 0, 0, 0, high, _] if high != 0 => Some(last(&segments)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last(&segments)),
        [0x64, 0xff9b, 1, ..] => Some(last(&segments)),
        [0x2002, high, low, ..] => {
            Some(std::net::Ipv4Addr::from(((high as u32) << 16) | low as u32))
        }
        _ => None,
    }
}

/// A request refused because it would reach this machine or a private
/// network: permanent, and said as such to the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Blocked(pub(super) String);

/// Resolves names as the system does, on a thread of its own: a name server
/// that never answers must not hold one of the runtime's few blocking
/// threads. Unless local requests are allowed it keeps only public
/// addresses, so a name that points into this machine or its network (or
/// is re-pointed there after the request was accepted) is never connected
/// to.
struct Resolver {
    public_only: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let public_only = self.public_only;
        Box::pin(async move {
            let lookup = host.clone();
            let found: Vec<SocketAddr> = crate::runtime::spawn_thread("dns", move || {
                std::net::ToSocketAddrs::to_socket_addrs(&(lookup.as_str(), 0))
                    .map(Iterator::collect::<Vec<_>>)
            })
            .join()
            .await??;
            if !public_only {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| local_address(addr.ip()).is_none())
                .collect();
            if public.is_empty() && !found.is_empty() {
                let reason = local_address(found[0].ip()).unwrap_or(LOCAL_NETWORK_REFUSED);
                return Err(Box::new(Blocked(format!("{host} is blocked: {reason}"))) as _);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// GitLab follows up to 10 redirects; each target is checked like the
/// first URL (a redirect to an address literal bypasses the resolver).
const MAX_REDIRECTS: usize = 10;

pub(super) fn client(allow_local: bool) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .dns_resolver(Arc::new(Resolver {
            public_only: !allow_local,
        }));
    let builder = if allow_local {
        builder
    } else {
        // A proxy would resolve the names itself, past the resolver.
        builder
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if let Some(reason) = local_target(attempt.url()) {
                    let message = format!(
                        "redirected to {}: {reason}",
                        redact::url(attempt.url().as_str())
                    );
                    attempt.error(Blocked(message))
                } else if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
    };
    builder.build().map_err(Error::internal)
}

/// The refusal behind a failed request, if it was one.
pub(super) fn blocked_cause(err: &reqwest::Error) -> Option<&Blocked> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(err) = cause {
        if let Some(blocked) = err.downcast_ref::<Blocked>() {
            return Some(blocked);
        }
        cause = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable() {
        for public in ["8.8.8.8", "52.216.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(local_address(public.parse().unwrap()), None, "{public}");
        }
        for local in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.1",
        ] {
            let ip = local.parse().unwrap();
            assert_eq!(local_address(ip), Some(LOCALHOST_REFUSED), "{local}");
        }
        for local in [
            "10.0.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "0.1.2.3",
            "192.0.2.1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            let ip = local.parse().unwrap();
            assert_eq!(local_address(ip), Some(LOCAL_NETWORK_REFUSED), "{local}");
        }
        assert_eq!(local_address("100.128.0.1".parse().unwrap()), None);
        // IPv6 forms that lead to an IPv4 host are judged by that host.
        for embedded in [
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::7f00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "fec0::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(
                local_address(embedded.parse().unwrap()).is_some(),
                "{embedded}"
            );
        }
        assert_eq!(local_address("64:ff9b::808:808".parse().unwrap()), None);
        assert_eq!(local_address("2002:808:808::1".parse().unwrap()), None);
    }

    /// A name that only resolves into this machine is never connected to,
    /// whatever the URL looked like when it was accepted.
    #[tokio::test]
    async fn names_resolving_to_this_machine_are_not_connected_to() {
        use reqwest::dns::Resolve;
        let name = "localhost".parse().unwrap();
        let refused = match (Resolver { public_only: true }).resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err.to_string(),
        };
        assert!(refused.contains("localhost is blocked"), "{refused}");

        let client = client(false).unwrap();
        let err = client.get("http://localhost:9/x").send().await.unwrap_err();
        let blocked = blocked_cause(&err).expect("the refusal is the cause");
        assert!(
            blocked.to_string().contains("localhost is blocked"),
            "{blocked}"
        );

        // Allowed, the same name resolves (and is refused by nobody here).
        let addrs = Resolver { public_only: false }
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap();
        assert!(addrs.into_iter().all(|addr| addr.ip().is_loopback()));
    }
}
