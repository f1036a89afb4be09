//! The outbound guard: which addresses an HTTP target may reach.
//!
//! Anyone who may create a route chooses its URLs; without a guard the operator would call
//! whatever they name, from inside the cluster: the cloud's metadata service, the API server,
//! the operator's own metrics port, services a NetworkPolicy hides from them. Every address a
//! target's host resolves to is checked, and a literal IP in a URL is checked the same way.
//! Redirects are never followed, so no answer can lead a call somewhere else.
//!
//! Refused by default: loopback, link-local (cloud metadata lives there), unspecified,
//! multicast, broadcast and reserved addresses, the API server's own address, and the
//! operator itself (its pod's addresses on every port, its own listening ports on every
//! address local to it). Private ranges are allowed (self-hosted Jenkins and GitLab live
//! there) unless denied, or refused by the `strict` profile for clusters shared by teams.
//! `--egress-allow` opens an address even inside a refused class; `--egress-deny` refuses
//! more, and wins over the allow list. Neither opens the API server or the operator.

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

    /// Whether the guard refuses this class under `profile` unless the allow list names the
    /// address.
    pub fn refused_in(&self, profile: EgressProfile) -> bool {
        match profile {
            EgressProfile::Default => !matches!(self, AddressClass::Private | AddressClass::Public),
            EgressProfile::Strict => !matches!(self, AddressClass::Public),
        }
    }

    /// How much reaching this class could give away; where one address has several
    /// readings (NAT64), the highest decides.
    fn severity(&self) -> u8 {
        match self {
            AddressClass::Public => 0,
            AddressClass::Private => 1,
            AddressClass::Reserved => 2,
            AddressClass::Broadcast => 3,
            AddressClass::Multicast => 4,
            AddressClass::LinkLocal => 5,
            AddressClass::Unspecified => 6,
            AddressClass::Loopback => 7,
            AddressClass::Metadata => 8,
        }
    }
}

/// Which classes are refused (`--egress-profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EgressProfile {
    /// Loopback, link-local, metadata, unspecified, multicast, broadcast and reserved
    /// addresses; private ranges are allowed.
    #[default]
    Default,
    /// The default classes and private ranges (RFC 1918, CGNAT `100.64.0.0/10`,
    /// unique-local `fc00::/7`): for clusters whose teams must reach external services only.
    Strict,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata services of the major clouds, beyond the link-local range they share.
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    // Alibaba Cloud.
    Ipv4Addr::new(100, 100, 100, 200),
    // Azure WireServer: a public address, answered by the host for every VM.
    Ipv4Addr::new(168, 63, 129, 16),
];
/// AWS's IPv6 endpoints: instance metadata, and EKS Pod Identity's credentials agent.
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
];

/// The class of `ip`. IPv4-mapped and IPv4-compatible IPv6 addresses, and NAT64 addresses
/// (the well-known prefix `64:ff9b::/96` and the local-use `64:ff9b:1::/48`), are classed by
/// the IPv4 address inside them, so that `::ffff:127.0.0.1` is loopback. Pure.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => nat64_local_use(v6).unwrap_or_else(|| classify_v6(v6)),
        },
    }
}

/// An address in the NAT64 local-use prefix `64:ff9b:1::/48` (RFC 8215), classed by the
/// IPv4 address a translator would reach. A network uses one of the RFC 6052 prefix lengths
/// inside that /48 (48, 56, 64 or 96), each placing the IPv4 address elsewhere (around the
/// reserved octet 8), and the guard cannot know which: every reading is taken and the most
/// sensitive class wins. Readings in `0.0.0.0/8` are skipped: a translator sends nothing to
/// "this network", and under the shorter formats every `64:ff9b:1::/96` address reads as one
/// (so the usual /96 deployment sees no false refusals). An address with no other reading is
/// unspecified.
fn nat64_local_use(ip: Ipv6Addr) -> Option<AddressClass> {
    if ip.octets()[..6] != [0, 0x64, 0xff, 0x9b, 0, 1] {
        return None;
    }
    let class = local_use_readings(IpAddr::V6(ip))
        .map(classify_v4)
        .max_by_key(AddressClass::severity)
        .unwrap_or(AddressClass::Unspecified);
    Some(class)
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
    if METADATA_V6.contains(&ip) {
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
/// (compatible, deprecated but still routed by some stacks) and `64:ff9b::a.b.c.d` (NAT64's
/// well-known prefix, only ever a /96). The local-use NAT64 prefix is [`nat64_local_use`].
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
    /// The operator's pod, or one of its own listening ports on an address local to it.
    #[error("DestinationNotAllowed: the target's address is the operator itself")]
    Operator,
}

/// The guard's settings.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Which classes are refused.
    pub profile: EgressProfile,
    /// Allowed even inside a refused class.
    pub allow: Vec<IpNet>,
    /// Refused on top of the defaults; wins over `allow`.
    pub deny: Vec<IpNet>,
    /// The API server's own addresses, with its port: a literal IP is refused on that port,
    /// an address a name resolves to on every port ([`EgressPolicy::check_resolved`]).
    pub api_server: Vec<SocketAddr>,
    /// The operator pod's own addresses (`--pod-ip`): refused on every port.
    pub own_ips: Vec<IpAddr>,
    /// The operator's listeners (receiver, metrics), as bound: their ports are refused on
    /// every address local to the operator (loopback, unspecified, its own).
    pub listeners: Vec<SocketAddr>,
}

impl EgressPolicy {
    /// Whether a target may connect to `addr`. Pure.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refused> {
        self.check_endpoint(addr)?;
        self.check_ip(addr.ip())
    }

    /// Whether every address a name resolves to may be reached: the check a proxy's caller
    /// makes, since the proxy may pick any of them. Addresses of a name, so the API server's
    /// are refused on every port (see [`EgressPolicy::check_resolved`]).
    pub fn check_all(&self, addrs: &[SocketAddr]) -> Result<(), Refused> {
        addrs.iter().try_for_each(|a| {
            self.check_endpoint(*a)?;
            self.check_resolved(a.ip())
        })
    }

    /// Whether a target may connect to `ip`, an address a *name* resolved to, whatever the
    /// port: [`EgressPolicy::check_ip`], and the API server's addresses on every port. The
    /// resolver that checks a name's addresses at connect time never sees the port, and a
    /// name may resolve to something else there than when [`EgressPolicy::check_endpoint`]
    /// looked (DNS rebinding): an address-and-port rule could not hold there, so the API
    /// server's addresses are refused outright, as the operator's own pod addresses are. A
    /// literal IP in a URL cannot change, and is checked with its port
    /// ([`EgressPolicy::check`]).
    pub fn check_resolved(&self, ip: IpAddr) -> Result<(), Refused> {
        self.check_ip(ip)?;
        if self.is_api_server_ip(ip) {
            return Err(Refused::ApiServer);
        }
        Ok(())
    }

    /// Whether `ip` is one of the API server's addresses, on any port.
    pub fn is_api_server_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.api_server.iter().any(|a| canonical(a.ip()) == ip)
    }

    /// The refusals that depend on the port: the API server, and the operator's own
    /// listeners. No allow list opens them.
    pub fn check_endpoint(&self, addr: SocketAddr) -> Result<(), Refused> {
        if self.is_api_server(addr) {
            return Err(Refused::ApiServer);
        }
        if self.is_operator(addr) {
            return Err(Refused::Operator);
        }
        Ok(())
    }

    /// Whether a name on `port` needs looking up before the call: the resolver that checks
    /// addresses at connect time never sees the port.
    pub fn guards_port(&self, port: u16) -> bool {
        self.api_server.iter().any(|a| a.port() == port)
            || self.listeners.iter().any(|a| a.port() == port)
    }

    /// Whether `addr` is the operator: one of its pod's addresses (any port), or one of its
    /// listening ports on an address that reaches it.
    pub fn is_operator(&self, addr: SocketAddr) -> bool {
        let ip = canonical(addr.ip());
        if self.is_own_ip(ip) {
            return true;
        }
        self.listeners.iter().any(|l| {
            l.port() == addr.port()
                && (canonical(l.ip()) == ip
                    || matches!(
                        classify(ip),
                        AddressClass::Loopback | AddressClass::Unspecified
                    ))
        })
    }

    fn is_own_ip(&self, ip: IpAddr) -> bool {
        self.own_ips.iter().any(|own| canonical(*own) == ip)
    }

    /// Whether any address `ip` stands for (as written, the IPv4 address inside it, or one
    /// a NAT64 translator may read from it) is the operator's own or on the deny list.
    fn own_or_denied(&self, ip: IpAddr) -> Option<Refused> {
        let readings = [ip, canonical(ip)]
            .into_iter()
            .chain(local_use_readings(ip).map(IpAddr::V4));
        for reading in readings {
            if self.is_own_ip(reading) {
                return Some(Refused::Operator);
            }
            if self.deny.iter().any(|net| net.contains(&reading)) {
                return Some(Refused::Denied);
            }
        }
        None
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
        if let Some(refused) = self.own_or_denied(ip) {
            return Err(refused);
        }
        // Allowed as written (`64:ff9b::/96` allows every NAT64 address) or as the IPv4
        // address inside.
        let inside = canonical(ip);
        if self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&inside))
        {
            return Ok(());
        }
        match classify(ip) {
            class if class.refused_in(self.profile) => Err(Refused::Class(class)),
            _ => Ok(()),
        }
    }
}

/// An IPv4 address written as IPv6 (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, or
/// behind NAT64's well-known prefix `64:ff9b::a.b.c.d`) is that IPv4 address, for the lists
/// and the operator's own addresses: `--egress-deny 10.0.0.0/8` refuses `64:ff9b::a00:1` too.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Each IPv4 address a translator may read from an address in NAT64's local-use prefix
/// (see [`nat64_local_use`]); none for any other address.
fn local_use_readings(ip: IpAddr) -> impl Iterator<Item = Ipv4Addr> {
    let o = match ip {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(_) => [0; 16],
    };
    let readings = if o[..6] == [0, 0x64, 0xff, 0x9b, 0, 1] {
        vec![
            [o[6], o[7], o[9], o[10]],
            [o[7], o[9], o[10], o[11]],
            [o[9], o[10], o[11], o[12]],
            [o[12], o[13], o[14], o[15]],
        ]
    } else {
        Vec::new()
    };
    readings
        .into_iter()
        .filter(|r| r[0] != 0)
        .map(Ipv4Addr::from)
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

/// The proxy HTTP targets go through (`--egress-proxy`), an `http://` or `https://` URL.
/// It may carry credentials (`http://user:password@proxy:3128`): shown, it is scheme, host
/// and port only.
#[derive(Clone, PartialEq, Eq)]
pub struct EgressProxy(url::Url);

impl EgressProxy {
    pub fn parse(text: &str) -> Result<Self, BadProxy> {
        let url = url::Url::parse(text.trim()).map_err(|_| BadProxy)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(BadProxy);
        }
        Ok(Self(url))
    }

    /// The URL, credentials included: for the HTTP client only.
    pub fn url(&self) -> &url::Url {
        &self.0
    }

    /// The proxy's host when it is a name (which the client resolves to reach the proxy).
    pub fn domain(&self) -> Option<&str> {
        self.0.domain()
    }
}

impl fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for EgressProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port_or_known_default() {
            Some(port) => write!(f, "{}://{host}:{port}", self.0.scheme()),
            None => write!(f, "{}://{host}", self.0.scheme()),
        }
    }
}

/// Never repeats the value: it may hold the proxy's password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--egress-proxy is not a URL like http://proxy.example:3128 (http or https, with a host)")]
pub struct BadProxy;

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
            ("fd00:ec2::23", AddressClass::Metadata),
            ("100.100.100.200", AddressClass::Metadata),
            ("168.63.129.16", AddressClass::Metadata),
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
        .filter(|c| c.refused_in(EgressProfile::Default))
        .collect();
        assert!(!refused.contains(&AddressClass::Private));
        assert!(!refused.contains(&AddressClass::Public));
        assert_eq!(refused.len(), 7);
        for class in refused {
            assert!(class.refused_in(EgressProfile::Strict), "{class}");
        }
        assert!(AddressClass::Private.refused_in(EgressProfile::Strict));
        assert!(!AddressClass::Public.refused_in(EgressProfile::Strict));
    }

    fn at(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn the_lists_and_own_addresses_see_ipv4_inside_every_ipv6_form() {
        let policy = EgressPolicy {
            deny: parse_cidrs("10.0.0.0/8").unwrap(),
            own_ips: vec!["192.0.2.7".parse().unwrap()],
            ..EgressPolicy::default()
        };
        for denied in [
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::a00:1",
        ] {
            assert_eq!(
                policy.check_ip(denied.parse().unwrap()),
                Err(Refused::Denied),
                "{denied}"
            );
        }
        for own in ["::ffff:192.0.2.7", "::192.0.2.7", "64:ff9b::c000:207"] {
            assert_eq!(
                policy.check_ip(own.parse().unwrap()),
                Err(Refused::Operator),
                "{own}"
            );
        }
        let allowing = EgressPolicy {
            allow: parse_cidrs("127.0.0.2/32").unwrap(),
            ..EgressPolicy::default()
        };
        assert_eq!(
            allowing.check_ip("64:ff9b::7f00:2".parse().unwrap()),
            Ok(())
        );
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
            ..EgressPolicy::default()
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
    fn cloud_metadata_addresses_are_complete() {
        // AWS (IMDS v4 and v6, EKS Pod Identity), GCP and Azure IMDS (the link-local
        // address), Azure WireServer, Alibaba Cloud; each also behind NAT64 and as mapped.
        for ip in [
            "169.254.169.254",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "168.63.129.16",
            "100.100.100.200",
            "::ffff:168.63.129.16",
            "64:ff9b::a83f:8110",
            "64:ff9b:1::a83f:8110",
        ] {
            assert_eq!(class(ip), AddressClass::Metadata, "{ip}");
            assert_eq!(
                EgressPolicy::default().check_ip(ip.parse().unwrap()),
                Err(Refused::Class(AddressClass::Metadata)),
                "{ip}"
            );
        }
        // Azure's neighbours on either side are ordinary public addresses.
        assert_eq!(class("168.63.129.15"), AddressClass::Public);
        assert_eq!(class("168.63.129.17"), AddressClass::Public);
        assert_eq!(class("fd00:ec2::24"), AddressClass::Private);
    }

    #[test]
    fn nat64_local_use_addresses_are_classed_by_the_ipv4_inside() {
        // RFC 6052 embeddings of one IPv4 address in 64:ff9b:1::/48, per prefix length.
        let cases = [
            // /96, the usual deployment.
            ("64:ff9b:1::7f00:1", AddressClass::Loopback),
            ("64:ff9b:1::a9fe:a9fe", AddressClass::Metadata),
            ("64:ff9b:1::a00:1", AddressClass::Private),
            ("64:ff9b:1::808:808", AddressClass::Public),
            // /48: the IPv4 address around the reserved octet 8.
            ("64:ff9b:1:7f00:0:100::", AddressClass::Loopback),
            ("64:ff9b:1:a9fe:a9:fe00::", AddressClass::Metadata),
            ("64:ff9b:1:808:8:800::", AddressClass::Public),
            // /56.
            ("64:ff9b:1:7f:0:1::", AddressClass::Loopback),
            ("64:ff9b:1:a9:fe:a9fe::", AddressClass::Metadata),
            ("64:ff9b:1:8:8:808::", AddressClass::Public),
            // /64.
            ("64:ff9b:1:0:7f:0:100:0", AddressClass::Loopback),
            ("64:ff9b:1:0:a9:fea9:fe00:0", AddressClass::Metadata),
            ("64:ff9b:1:0:8:808:800:0", AddressClass::Public),
            // A loopback reading hidden behind a public one (suffix bits set) still wins.
            ("64:ff9b:1:7f00:0:100:808:808", AddressClass::Loopback),
            // Nothing but "this network" inside.
            ("64:ff9b:1::", AddressClass::Unspecified),
            // Outside the /48: an ordinary address.
            ("64:ff9b:2::7f00:1", AddressClass::Public),
        ];
        for (ip, expected) in cases {
            assert_eq!(class(ip), expected, "{ip}");
        }
    }

    #[test]
    fn the_strict_profile_also_refuses_private_ranges() {
        let strict = EgressPolicy {
            profile: EgressProfile::Strict,
            ..EgressPolicy::default()
        };
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "fd12:3456::1",
            "fc00::1",
            "::ffff:10.0.0.1",
            "64:ff9b:1::a00:1",
        ] {
            assert_eq!(
                strict.check(at(ip, 443)),
                Err(Refused::Class(AddressClass::Private)),
                "{ip}"
            );
            assert_eq!(EgressPolicy::default().check(at(ip, 443)), Ok(()), "{ip}");
        }
        assert_eq!(strict.check(at("8.8.8.8", 443)), Ok(()));
        assert_eq!(
            strict.check(at("127.0.0.1", 80)),
            Err(Refused::Class(AddressClass::Loopback))
        );
        // The allow list still opens one service; the deny list still wins.
        let opened = EgressPolicy {
            allow: parse_cidrs("10.1.2.0/24").unwrap(),
            deny: parse_cidrs("10.1.2.9/32").unwrap(),
            ..strict
        };
        assert_eq!(opened.check(at("10.1.2.3", 443)), Ok(()));
        assert_eq!(
            opened.check(at("10.1.3.3", 443)),
            Err(Refused::Class(AddressClass::Private))
        );
        assert_eq!(opened.check(at("10.1.2.9", 443)), Err(Refused::Denied));
    }

    #[test]
    fn the_operator_itself_is_refused_even_when_allowed() {
        let policy = EgressPolicy {
            // Everything opened that could be.
            allow: parse_cidrs("0.0.0.0/0, ::/0").unwrap(),
            own_ips: vec![
                "10.244.1.7".parse().unwrap(),
                "fd00:10:244::7".parse().unwrap(),
            ],
            listeners: vec![at("0.0.0.0", 8080), at("127.0.0.1", 9090)],
            ..EgressPolicy::default()
        };
        // The pod's own addresses, on any port, however written.
        for addr in [
            at("10.244.1.7", 443),
            at("10.244.1.7", 8080),
            at("::ffff:10.244.1.7", 22),
            at("fd00:10:244::7", 80),
        ] {
            assert_eq!(policy.check(addr), Err(Refused::Operator), "{addr}");
            assert_eq!(policy.check_ip(addr.ip()), Err(Refused::Operator), "{addr}");
        }
        // Its own ports on every local address.
        for addr in [
            at("127.0.0.1", 8080),
            at("127.0.0.2", 9090),
            at("::1", 8080),
            at("::ffff:127.0.0.1", 9090),
            at("0.0.0.0", 8080),
            at("::", 9090),
        ] {
            assert_eq!(policy.check(addr), Err(Refused::Operator), "{addr}");
        }
        // Other hosts' 8080 (a Jenkins, say) and other local ports stay as the lists say.
        assert_eq!(policy.check(at("10.0.0.5", 8080)), Ok(()));
        assert_eq!(policy.check(at("127.0.0.1", 8081)), Ok(()));
        assert!(policy.guards_port(8080) && policy.guards_port(9090));
        assert!(!policy.guards_port(443));
        // Default: no pod IP given, the listeners still are.
        let default = EgressPolicy {
            allow: parse_cidrs("127.0.0.0/8").unwrap(),
            listeners: vec![at("0.0.0.0", 8080)],
            ..EgressPolicy::default()
        };
        assert_eq!(default.check(at("127.0.0.1", 8080)), Err(Refused::Operator));
        assert_eq!(default.check(at("127.0.0.1", 8081)), Ok(()));
    }

    #[test]
    fn a_name_never_reaches_the_api_servers_address_on_any_port() {
        // The API server on a private ClusterIP (allowed by default) and on an allow-listed
        // loopback address. A name on the API server's port was looked up and passed
        // `check_endpoint` on one address; the connection resolves it again, and the
        // resolver sees only the IP: it must refuse the API server's address whatever the
        // port, or a name that rebinds to it in between would get through.
        let policy = EgressPolicy {
            allow: parse_cidrs("127.0.0.1/32").unwrap(),
            api_server: vec![at("10.96.0.1", 443), at("127.0.0.1", 6443)],
            ..EgressPolicy::default()
        };
        for ip in ["10.96.0.1", "::ffff:10.96.0.1", "127.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.check_ip(ip), Ok(()), "{ip}: its class is allowed");
            assert_eq!(policy.check_resolved(ip), Err(Refused::ApiServer), "{ip}");
        }
        assert_eq!(policy.check_resolved("10.96.0.2".parse().unwrap()), Ok(()));
        assert_eq!(
            policy.check_resolved("127.0.0.2".parse().unwrap()),
            Err(Refused::Class(AddressClass::Loopback)),
            "the class is said first"
        );
        // Through a proxy, a name's addresses: the same rule, on every port.
        assert_eq!(
            policy.check_all(&[at("8.8.8.8", 80), at("10.96.0.1", 80)]),
            Err(Refused::ApiServer)
        );
        // A literal IP cannot rebind: it is checked with its port, so other services on an
        // allowed address the API server shares (the tests' loopback stand-ins) stay open.
        assert_eq!(policy.check(at("127.0.0.1", 8080)), Ok(()));
        assert_eq!(policy.check(at("127.0.0.1", 6443)), Err(Refused::ApiServer));
    }

    #[test]
    fn through_a_proxy_every_address_of_a_name_must_be_allowed() {
        let policy = EgressPolicy::default();
        assert_eq!(
            policy.check_all(&[at("10.0.0.1", 80), at("8.8.8.8", 80)]),
            Ok(())
        );
        assert_eq!(
            policy.check_all(&[at("8.8.8.8", 80), at("127.0.0.1", 80)]),
            Err(Refused::Class(AddressClass::Loopback))
        );
    }

    #[test]
    fn a_proxy_url_is_shown_without_its_credentials() {
        let proxy = EgressProxy::parse("http://user:s3cret@proxy.example:3128/").unwrap();
        assert_eq!(proxy.to_string(), "http://proxy.example:3128");
        assert_eq!(format!("{proxy:?}"), "http://proxy.example:3128");
        assert_eq!(proxy.domain(), Some("proxy.example"));
        assert_eq!(proxy.url().password(), Some("s3cret"));
        assert_eq!(
            EgressProxy::parse("https://10.0.0.1").unwrap().to_string(),
            "https://10.0.0.1:443"
        );
        assert_eq!(
            EgressProxy::parse("http://[::1]:3128").unwrap().domain(),
            None
        );
        for bad in [
            "proxy:3128",
            "socks5://proxy:1080",
            "ftp://p",
            "http://",
            "",
        ] {
            assert!(EgressProxy::parse(bad).is_err(), "{bad}");
        }
        for bad in ["socks5://user:s3cret@p:1080", "http://user:s3cret@"] {
            let err = EgressProxy::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn refusals_never_name_the_address() {
        for refused in [
            Refused::Class(AddressClass::Metadata),
            Refused::Denied,
            Refused::ApiServer,
            Refused::Operator,
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
