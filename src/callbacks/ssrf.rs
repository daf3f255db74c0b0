//! The guard on user-given callback URLs. Every address a connection could go to must be
//! public: the DNS resolver refuses names that resolve to anything else, and IP literals,
//! which never reach the resolver, are checked before the request. A configured allowlist
//! of networks is the only way past it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a destination was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error("callback URL scheme `{0}` is not allowed (https, or http where callbacks.allow_http is set)")]
    Scheme(String),
    #[error("callback URL has no host")]
    NoHost,
    /// The text names the host, never the address it resolved to: the tenant who gave the
    /// URL reads it, and addresses would map the internal network for them. The log has it.
    #[error("callback host `{host}` is not a public address")]
    NotPublic { host: String, addr: IpAddr },
    #[error("callback host `{0}` resolves to no address")]
    NoAddress(String),
}

/// Which addresses outgoing callbacks may reach.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<IpNet>,
    allow_http: bool,
}

impl Guard {
    /// A guard that also lets `allow` through (e.g. `127.0.0.1/32` for development), and
    /// plain http when `allow_http`.
    pub fn new(allow: Vec<IpNet>, allow_http: bool) -> Self {
        Self { allow, allow_http }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Checks the scheme, and the host when it is an IP literal (names are the resolver's).
    /// `url` parses every IPv4 spelling (`2130706433`, `0x7f.1`, `127.1`) to its address.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        let allowed = url.scheme() == "https" || (url.scheme() == "http" && self.allow_http);
        if !allowed {
            return Err(Refused::Scheme(url.scheme().to_string()));
        }
        let addr = match url.host().ok_or(Refused::NoHost)? {
            url::Host::Domain(_) => return Ok(()),
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
        };
        self.check(&addr.to_string(), addr)
    }

    fn check(&self, host: &str, addr: IpAddr) -> Result<(), Refused> {
        if self.permits(addr) {
            return Ok(());
        }
        Err(Refused::NotPublic {
            host: host.to_string(),
            addr,
        })
    }
}

/// A reqwest resolver that looks names up and refuses the lot when any address is not
/// permitted, so a name with one public and one private address cannot be raced.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    guard: Arc<Guard>,
    /// Fixed answers for names, consulted before DNS (and still guarded).
    fixed: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl GuardedResolver {
    pub fn new(guard: Arc<Guard>, fixed: HashMap<String, Vec<IpAddr>>) -> Self {
        Self {
            guard,
            fixed: Arc::new(fixed),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        let fixed = self.fixed.get(name.as_str()).cloned();
        Box::pin(async move {
            let host = name.as_str();
            let addrs: Vec<SocketAddr> = match fixed {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host, 0)).await?.collect(),
            };
            if addrs.is_empty() {
                return Err(Refused::NoAddress(host.to_string()).into());
            }
            for addr in &addrs {
                guard.check(host, addr.ip())?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Whether `ip` is reachable on the public internet: not loopback, private, link-local,
/// CGNAT, multicast, documentation, reserved, a cloud metadata address, or an IPv6 form
/// that embeds such an IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// IPv4 ranges that are not public (IANA special-purpose registry, plus multicast).
const NOT_PUBLIC_V4: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", 0.0.0.0
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // CGNAT (and Alibaba's 100.100.100.200 metadata)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata 169.254.169.254
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments (Oracle metadata 192.0.0.192)
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, broadcast
];

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    !NOT_PUBLIC_V4.iter().any(|(net, len)| {
        let mask = u32::MAX << (32 - u32::from(*len));
        bits & mask == u32::from(*net)
    })
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let within = |net: u128, len: u32| bits & (u128::MAX << (128 - len)) == net;
    let embedded_v4 = |shift: u32| Ipv4Addr::from(((bits >> shift) & 0xffff_ffff) as u32);
    if within(0x0064_ff9b << 96, 96) {
        // NAT64: as public as the IPv4 address it stands for.
        return is_public_v4(embedded_v4(0));
    }
    if within(0x2002 << 112, 16) {
        // 6to4 carries an IPv4 address in bits 16-48.
        return is_public_v4(embedded_v4(80));
    }
    // Only global unicast (2000::/3) can be public; that excludes ::, ::1, IPv4-mapped
    // and -compatible forms, the local NAT64 prefix, ULA, link- and site-local, multicast.
    within(0x2 << 124, 3)
        && !within(0x2001 << 112, 23) // IETF protocol assignments, Teredo (embeds IPv4)
        && !within(0x2001_0db8 << 96, 32) // documentation
        && !within(0x3fff << 112, 20) // documentation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().expect("an IP address"))
    }

    #[test]
    fn loopback_private_link_local_and_cgnat_ipv4_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
    }

    #[test]
    fn cloud_metadata_addresses_are_not_public() {
        for ip in [
            "169.254.169.254", // AWS, GCP, Azure, DigitalOcean
            "100.100.100.200", // Alibaba
            "192.0.0.192",     // Oracle
            "fd00:ec2::254",   // AWS over IPv6
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
    }

    #[test]
    fn the_edges_of_the_private_ranges_are_public() {
        for ip in [
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "126.255.255.255",
            "128.0.0.0",
            "223.255.255.255",
            "1.1.1.1",
            "8.8.8.8",
        ] {
            assert!(public(ip), "{ip} must be public");
        }
    }

    #[test]
    fn local_and_special_ipv6_is_not_public() {
        for ip in [
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "fc00::1",
            "fdff:ffff::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",      // Teredo
            "2001:10::1",   // ORCHID
            "100::1",       // discard
            "64:ff9b:1::1", // local-use NAT64
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
    }

    #[test]
    fn ipv4_mapped_and_compatible_forms_are_not_public_even_for_public_addresses() {
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0:7f00:1", // SIIT form
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
    }

    #[test]
    fn nat64_and_6to4_are_as_public_as_the_ipv4_address_inside() {
        assert!(!public("64:ff9b::7f00:1"), "NAT64 of 127.0.0.1");
        assert!(!public("64:ff9b::a00:1"), "NAT64 of 10.0.0.1");
        assert!(!public("64:ff9b::c0a8:101"), "NAT64 of 192.168.1.1");
        assert!(public("64:ff9b::808:808"), "NAT64 of 8.8.8.8");
        assert!(!public("2002:7f00:1::1"), "6to4 of 127.0.0.1");
        assert!(!public("2002:a9fe:a9fe::1"), "6to4 of 169.254.169.254");
        assert!(public("2002:808:808::1"), "6to4 of 8.8.8.8");
    }

    #[test]
    fn global_unicast_ipv6_is_public() {
        for ip in ["2606:4700:4700::1111", "2a00:1450:4001::200e", "2400:cb00::1"] {
            assert!(public(ip), "{ip} must be public");
        }
    }

    #[test]
    fn every_ipv4_spelling_of_loopback_is_refused_as_a_literal() {
        let guard = Guard::new(vec![], true);
        for spelling in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://017700000001/",
            "http://127.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[0:0:0:0:0:0:0:1]/",
        ] {
            let url = url::Url::parse(spelling).expect("a URL");
            assert!(
                matches!(guard.check_url(&url), Err(Refused::NotPublic { .. })),
                "{spelling} must be refused"
            );
        }
    }

    #[test]
    fn the_allowlist_is_the_only_way_past_the_guard() {
        let guard = Guard::new(vec!["127.0.0.1/32".parse().expect("a network")], true);
        let ok = |s: &str| guard.check_url(&url::Url::parse(s).expect("a URL")).is_ok();
        assert!(ok("http://127.0.0.1:8080/hook"));
        assert!(ok("http://2130706433/"));
        assert!(!ok("http://127.0.0.2/"), "outside the /32");
        assert!(!ok("http://[::1]/"));
        assert!(
            !ok("http://[::ffff:127.0.0.1]/"),
            "a mapped form is not the IPv4 network"
        );
        assert!(!ok("http://10.0.0.1/"));
        assert!(ok("https://hooks.example.com/"), "names are the resolver's to check");
        assert!(!ok("ftp://127.0.0.1/"));
        assert!(!ok("file:///etc/passwd"));
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let url = url::Url::parse("http://hooks.example.com/").expect("a URL");
        assert!(matches!(Guard::default().check_url(&url), Err(Refused::Scheme(_))));
        assert!(Guard::new(vec![], true).check_url(&url).is_ok());
        let https = url::Url::parse("https://hooks.example.com/").expect("a URL");
        assert!(Guard::default().check_url(&https).is_ok());
    }
}
