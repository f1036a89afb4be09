//! The executor's way out: one HTTP client whose every connection passes the outbound guard
//! ([`crate::egress`]), the guard's policy, and the credentials obtained at send time.
//!
//! Where the guard looks:
//! - names: the client's resolver drops every address the policy refuses, at connect time,
//!   so a name cannot resolve to an allowed address when checked and a refused one when used;
//! - literal IPs in a URL (the resolver never sees them) and the API server's own address and
//!   port: [`Outbound::check`], before each call and before any token exchange;
//! - redirects: never followed ([`reqwest::redirect::Policy::none`]).

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::credentials::CredentialCache;
use super::request::USER_AGENT;
use crate::egress::{EgressPolicy, Refused};

pub struct Outbound {
    pub client: reqwest::Client,
    pub credentials: CredentialCache,
    pub policy: Arc<EgressPolicy>,
}

impl Outbound {
    pub fn new(policy: EgressPolicy) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
            .build()?;
        Ok(Self {
            client,
            credentials: CredentialCache::default(),
            policy,
        })
    }

    /// Refuses a URL whose host is a literal IP the policy refuses, or whose host and port are
    /// the API server's. Names are checked again, address by address, when connecting.
    pub async fn check(&self, url: &Url) -> Result<(), Refused> {
        let port = url.port_or_known_default().unwrap_or(0);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.policy.check(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Ipv6(ip)) => self.policy.check(SocketAddr::new(ip.into(), port)),
            // Only a name on one of the API server's ports can lead to it: others are not
            // looked up twice (the resolver checks every address when connecting).
            Some(url::Host::Domain(name))
                if self.policy.api_server.iter().any(|a| a.port() == port) =>
            {
                let addrs = tokio::net::lookup_host((name, port)).await;
                // A name that does not resolve fails when connecting, with its own error.
                for addr in addrs.into_iter().flatten() {
                    if self.policy.is_api_server(addr) {
                        return Err(Refused::ApiServer);
                    }
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

/// Resolves with the system resolver, then keeps only the addresses the policy allows.
struct GuardedResolver(Arc<EgressPolicy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let resolved = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let mut allowed = Vec::new();
            let mut refused = None;
            for addr in resolved {
                match policy.check_ip(addr.ip()) {
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
