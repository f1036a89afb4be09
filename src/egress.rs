//! The outbound guard: which addresses an HTTP target may reach.
//!
//! Anyone who may create a route chooses its URLs; without a guard the operator would call
//! whatever they name, from inside the cluster: the cloud's metadata service, the API server,
//! the operator's own metrics port, services a NetworkPolicy hides from them. Every address a
//! target's host resolves to is checked, and a literal IP in a URL is checked the same way.
//! Redirects are never followed, so no answer can lead a call somewhere else.
//!
//! Refused by default: loopback, link-local (cloud metadata lives there), unspecified,
//! multicast, broadcast and reserved addresses, and the API server's own address. Private
//! ranges are allowed (self-hosted Jenkins and GitLab live there) unless denied.
//! `--egress-allow` opens an address even inside a refused class; `--egress-deny` refuses
//! more, and wins over the allow list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

/// What kind of address a target resolved to: all a refusal ever says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    Loopback,
    /// A cloud metadata service (`169.254.169.254`, `fd00:ec2::254`, ...).
    Metadata,
    LinkLocal,
    Unspecified,
    Multicast,
    Broadcast,
    /// Reserved, documentation, benchmarking and other special-purpose ranges.
    Reserved,
    /// RFC 1918, unique-local IPv6 and shared address space (CGNAT).
    Private,
    Public,
}

impl AddressClass {
    pub fn as_str(&self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Metadata => "cloud metadata",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Reserved => "reserved",
            AddressClass::Private => "private",
            AddressClass::Public => "public",
        }
    }

    /// Whether the guard refuses this class unless the allow list names the address.
    pub fn refused_by_default(&self) -> bool {
        !matches!(self, AddressClass::Private | AddressClass::Public)
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata services of the major clouds, beyond the link-local range they share.
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(169, 254, 169, 254),
    // Alibaba Cloud.
    Ipv4Addr::new(100, 100, 100, 200),
];
/// AWS's IPv6 instance metadata endpoint.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// The class of `ip`. IPv4-mapped and IPv4-compatible IPv6 addresses, and the NAT64
/// well-known prefix, are classed by the IPv4 address inside them, so that `::ffff:127.0.0.1`
/// is loopback. Pure.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if METADATA_V4.contains(&ip) {
        AddressClass::Metadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 0 {
        // 0.0.0.0/8: "this network"; 0.0.0.0 reaches the local host on Linux.
        AddressClass::Unspecified
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddressClass::Private
    } else if a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 192 && b == 88 && c == 99)
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let segments = ip.segments();
    if ip == METADATA_V6 {
        AddressClass::Metadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if segments[0] & 0xffc0 == 0xfe80 {
        AddressClass::LinkLocal
    } else if segments[0] & 0xfe00 == 0xfc00 {
        AddressClass::Private
    } else if segments[0] == 0x2001 && segments[1] == 0xdb8
        // Discard-only, site-local (deprecated), 6to4 relay anycast and 2001::/23 services.
        || segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]
        || segments[0] & 0xffc0 == 0xfec0
        || segments[0] == 0x2001 && segments[1] < 0x200
    {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

/// The IPv4 address an IPv6 address carries: `::ffff:a.b.c.d` (mapped), `::a.b.c.d`
/// (compatible, deprecated but still routed by some stacks) and `64:ff9b::a.b.c.d` (NAT64).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // `::` and `::1` are IPv6's own unspecified and loopback addresses.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(tail),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        _ => None,
    }
}

/// Why a destination was refused. Says the class, never the address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("DestinationNotAllowed: the target's address is {0}; allow it with --egress-allow")]
    Class(AddressClass),
    #[error("DestinationNotAllowed: the target's address is on --egress-deny")]
    Denied,
    #[error("DestinationNotAllowed: the target's address is the Kubernetes API server's")]
    ApiServer,
}

/// The guard's settings.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Allowed even inside a refused class.
    pub allow: Vec<IpNet>,
    /// Refused on top of the defaults; wins over `allow`.
    pub deny: Vec<IpNet>,
    /// The API server's own addresses (address and port).
    pub api_server: Vec<SocketAddr>,
}

impl EgressPolicy {
    /// Whether a target may connect to `addr`. Pure.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refused> {
        if self.is_api_server(addr) {
            return Err(Refused::ApiServer);
        }
        self.check_ip(addr.ip())
    }

    /// Whether `addr` is the API server's address and port.
    pub fn is_api_server(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        self.api_server
            .iter()
            .any(|a| canonical(a.ip()) == ip && a.port() == addr.port())
    }

    /// Whether a target may connect to `ip`, whatever the port: the classes and the lists.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let ip = canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Err(Refused::Denied);
        }
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match classify(ip) {
            class if class.refused_by_default() => Err(Refused::Class(class)),
            _ => Ok(()),
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is that IPv4 address, for the lists.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A comma-separated list of CIDRs (`10.0.0.0/8, 127.0.0.2/32`); a bare address is a /32 or
/// /128. Empty text is an empty list.
pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, BadCidr> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| BadCidr(s.to_string()))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a CIDR like 10.0.0.0/8 or an IP address")]
pub struct BadCidr(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> AddressClass {
        classify(text.parse().unwrap())
    }

    #[test]
    fn every_class_is_recognised() {
        let cases = [
            ("127.0.0.1", AddressClass::Loopback),
            ("127.255.0.9", AddressClass::Loopback),
            ("::1", AddressClass::Loopback),
            ("169.254.169.254", AddressClass::Metadata),
            ("fd00:ec2::254", AddressClass::Metadata),
            ("100.100.100.200", AddressClass::Metadata),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("fe80::1", AddressClass::LinkLocal),
            ("febf::1", AddressClass::LinkLocal),
            ("0.0.0.0", AddressClass::Unspecified),
            ("0.1.2.3", AddressClass::Unspecified),
            ("::", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("239.255.255.250", AddressClass::Multicast),
            ("ff02::1", AddressClass::Multicast),
            ("255.255.255.255", AddressClass::Broadcast),
            ("240.0.0.1", AddressClass::Reserved),
            ("192.0.2.10", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("2001:db8::1", AddressClass::Reserved),
            ("fec0::1", AddressClass::Reserved),
            ("100::1", AddressClass::Reserved),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("172.31.255.255", AddressClass::Private),
            ("192.168.0.1", AddressClass::Private),
            ("100.64.0.1", AddressClass::Private),
            ("fd12:3456::1", AddressClass::Private),
            ("fc00::1", AddressClass::Private),
            ("8.8.8.8", AddressClass::Public),
            ("172.32.0.1", AddressClass::Public),
            ("100.128.0.1", AddressClass::Public),
            ("2606:4700::1111", AddressClass::Public),
            ("fec0::1", AddressClass::Reserved),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_is_classed_by_its_ipv4_address() {
        assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:169.254.169.254"), AddressClass::Metadata);
        assert_eq!(class("::ffff:10.0.0.1"), AddressClass::Private);
        assert_eq!(class("::127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("64:ff9b::a9fe:a9fe"), AddressClass::Metadata);
        assert_eq!(class("64:ff9b::808:808"), AddressClass::Public);
        assert_eq!(class("::ffff:8.8.8.8"), AddressClass::Public);
    }

    #[test]
    fn refused_classes_are_the_documented_ones() {
        let refused: Vec<_> = [
            AddressClass::Loopback,
            AddressClass::Metadata,
            AddressClass::LinkLocal,
            AddressClass::Unspecified,
            AddressClass::Multicast,
            AddressClass::Broadcast,
            AddressClass::Reserved,
            AddressClass::Private,
            AddressClass::Public,
        ]
        .into_iter()
        .filter(AddressClass::refused_by_default)
        .collect();
        assert!(!refused.contains(&AddressClass::Private));
        assert!(!refused.contains(&AddressClass::Public));
        assert_eq!(refused.len(), 7);
    }

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn the_policy_allows_denies_and_guards_the_api_server() {
        let default = EgressPolicy::default();
        assert_eq!(
            default.check(at("127.0.0.1", 9090)),
            Err(Refused::Class(AddressClass::Loopback))
        );
        assert_eq!(
            default.check(at("::ffff:169.254.169.254", 80)),
            Err(Refused::Class(AddressClass::Metadata))
        );
        assert_eq!(default.check(at("10.0.0.5", 8080)), Ok(()));
        assert_eq!(default.check(at("8.8.8.8", 443)), Ok(()));

        let policy = EgressPolicy {
            allow: parse_cidrs("127.0.0.2/32, 10.0.0.0/8").unwrap(),
            deny: parse_cidrs("10.1.0.0/16").unwrap(),
            api_server: vec![at("127.0.0.2", 6443)],
        };
        assert_eq!(policy.check(at("127.0.0.2", 8080)), Ok(()));
        assert_eq!(policy.check(at("::ffff:127.0.0.2", 8080)), Ok(()));
        assert_eq!(
            policy.check(at("127.0.0.1", 8080)),
            Err(Refused::Class(AddressClass::Loopback))
        );
        assert_eq!(
            policy.check(at("127.0.0.2", 6443)),
            Err(Refused::ApiServer),
            "the API server stays refused even on an allowed address"
        );
        assert_eq!(policy.check(at("10.1.2.3", 80)), Err(Refused::Denied));
        assert_eq!(policy.check(at("10.2.0.1", 80)), Ok(()));
    }

    #[test]
    fn refusals_never_name_the_address() {
        for refused in [
            Refused::Class(AddressClass::Metadata),
            Refused::Denied,
            Refused::ApiServer,
        ] {
            let text = refused.to_string();
            assert!(text.starts_with("DestinationNotAllowed"), "{text}");
            assert!(!text.chars().any(|c| c.is_ascii_digit()), "{text}");
        }
    }

    #[test]
    fn cidr_lists_parse() {
        assert_eq!(parse_cidrs("").unwrap(), vec![]);
        let nets = parse_cidrs(" 10.0.0.0/8 ,127.0.0.2, ::1 ,fd00::/8").unwrap();
        assert_eq!(nets.len(), 4);
        assert!(nets[1].contains(&"127.0.0.2".parse::<IpAddr>().unwrap()));
        assert!(!nets[1].contains(&"127.0.0.3".parse::<IpAddr>().unwrap()));
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(parse_cidrs("example.com").is_err());
    }
}
