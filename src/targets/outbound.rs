//! The executor's way out: one HTTP client whose every connection passes the outbound guard
//! ([`crate::egress`]), the guard's policy, and the credentials obtained at send time.
//!
//! Where the guard looks:
//! - names: the client's resolver drops every address the policy refuses, at connect time,
//!   so a name cannot resolve to an allowed address when checked and a refused one when used;
//!   since it never sees the port, it refuses the API server's addresses on every port (a
//!   name that rebinds to the API server between a port-aware check and the connection must
//!   not get through);
//! - literal IPs in a URL (the resolver never sees them), and the port-bound refusals (the
//!   API server's address and port for a literal IP, the operator's own listeners):
//!   [`Outbound::check`], before each call and before any token exchange;
//! - redirects: never followed ([`reqwest::redirect::Policy::none`]);
//! - proxies: none from the environment (`HTTP_PROXY`, `ALL_PROXY`, ...: a proxy resolves
//!   a target's name itself, past the resolver). Only `--egress-proxy`, and then
//!   [`Outbound::check`] resolves every target's name itself and checks every address.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::credentials::CredentialCache;
use super::request::USER_AGENT;
use crate::egress::{EgressPolicy, EgressProxy, Refused};

pub struct Outbound {
    pub client: reqwest::Client,
    pub credentials: CredentialCache,
    pub policy: Arc<EgressPolicy>,
    /// Calls go through `--egress-proxy`: names are checked before the call, not by the
    /// resolver (which then only ever resolves the proxy).
    proxied: bool,
}

/// Why [`Outbound::check`] stopped a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// The guard refuses the destination: fail at once.
    Refused(Refused),
    /// Through the proxy, the target's name did not resolve here, so the guard could not
    /// check it: try again later, as after any failed look-up.
    Unresolved,
}

impl Outbound {
    /// The guarded client; through `proxy` when one is given, never through one named by
    /// the environment.
    pub fn new(policy: EgressPolicy, proxy: Option<&EgressProxy>) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let resolver = GuardedResolver {
            policy: policy.clone(),
            proxy_host: proxy.and_then(|p| p.domain()).map(str::to_ascii_lowercase),
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(resolver))
            // HTTP_PROXY, ALL_PROXY and the like are ignored: a proxy resolves the target's
            // name itself, so the resolver's check would never run.
            .no_proxy();
        if let Some(proxy) = proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy.url().as_str())?);
        }
        Ok(Self {
            client: builder.build()?,
            credentials: CredentialCache::default(),
            policy,
            proxied: proxy.is_some(),
        })
    }

    /// Refuses a URL whose host is a literal IP the policy refuses, or whose host and port
    /// are the API server's or one of the operator's own listeners. Without a proxy, other
    /// names are checked again, address by address, when connecting.
    ///
    /// Through `--egress-proxy`, every name is resolved here and every address it resolves
    /// to must pass the guard, since the proxy may pick any of them. Residual: the proxy
    /// resolves the name again, and a name whose records change in between (DNS rebinding
    /// with a short TTL) can lead it to an address not checked here. A proxy that refuses
    /// loopback, link-local and metadata addresses itself closes that.
    pub async fn check(&self, url: &Url) -> Result<(), Blocked> {
        let port = url.port_or_known_default().unwrap_or(0);
        let literal = |ip: std::net::IpAddr| {
            self.policy
                .check(SocketAddr::new(ip, port))
                .map_err(Blocked::Refused)
        };
        match url.host() {
            Some(url::Host::Ipv4(ip)) => literal(ip.into()),
            Some(url::Host::Ipv6(ip)) => literal(ip.into()),
            Some(url::Host::Domain(name)) if self.proxied => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|_| Blocked::Unresolved)?
                    .collect();
                if addrs.is_empty() {
                    return Err(Blocked::Unresolved);
                }
                self.policy.check_all(&addrs).map_err(Blocked::Refused)
            }
            // Only a name on a guarded port can lead to the API server or the operator:
            // others are not looked up twice (the resolver checks every address when
            // connecting).
            Some(url::Host::Domain(name)) if self.policy.guards_port(port) => {
                let addrs = tokio::net::lookup_host((name, port)).await;
                // A name that does not resolve fails when connecting, with its own error.
                for addr in addrs.into_iter().flatten() {
                    self.policy.check_endpoint(addr).map_err(Blocked::Refused)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The guard's refusal inside a transport error, if that is why the call failed.
pub fn refusal(error: &reqwest::Error) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

/// Resolves with the system resolver, then keeps only the addresses the policy allows for a
/// name ([`EgressPolicy::check_resolved`]: the API server's addresses are refused on every
/// port); the `--egress-proxy` host, chosen by the cluster's admin, is not a target and is
/// not checked.
struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    proxy_host: Option<String>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let is_proxy = self
            .proxy_host
            .as_deref()
            .is_some_and(|host| name.as_str().eq_ignore_ascii_case(host));
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if is_proxy {
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let mut allowed = Vec::new();
            let mut refused = None;
            for addr in resolved {
                // The API server's addresses on every port: the port is not known here, and
                // the name may resolve otherwise than when `check` looked (DNS rebinding).
                match policy.check_resolved(addr.ip()) {
                    Ok(()) => allowed.push(addr),
                    Err(r) => refused = Some(r),
                }
            }
            match refused {
                Some(r) if allowed.is_empty() => Err(Box::new(r) as _),
                _ => Ok(Box::new(allowed.into_iter()) as Addrs),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::parse_cidrs;

    fn resolver(api_server: Vec<SocketAddr>) -> GuardedResolver {
        GuardedResolver {
            policy: Arc::new(EgressPolicy {
                allow: parse_cidrs("127.0.0.0/8, ::1/128").unwrap(),
                api_server,
                ..EgressPolicy::default()
            }),
            proxy_host: None,
        }
    }

    async fn resolve(resolver: &GuardedResolver, name: &str) -> Result<Vec<SocketAddr>, String> {
        let name: Name = name.parse().unwrap();
        match resolver.resolve(name).await {
            Ok(addrs) => Ok(addrs.collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The connection's own look-up of a name on the API server's port: `check` looked it up
    /// and tested address and port, but the name may resolve to the API server only now
    /// (DNS rebinding). The resolver sees no port, so it must refuse the API server's
    /// address on every port. `localhost` (from /etc/hosts) stands for the rebound name.
    #[tokio::test]
    async fn the_connect_time_look_up_refuses_the_api_servers_addresses() {
        let open = resolver(Vec::new());
        let reached = resolve(&open, "localhost").await.unwrap();
        assert!(
            reached.iter().any(|a| a.ip().is_loopback()),
            "allowed without an API server there: {reached:?}"
        );

        let api = vec![
            SocketAddr::from(([127, 0, 0, 1], 6443)),
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 6443)),
        ];
        let guarded = resolver(api);
        let refused = resolve(&guarded, "localhost").await.unwrap_err();
        assert!(refused.contains("API server"), "{refused}");
    }
}
