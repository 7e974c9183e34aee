//! The one outbound-address policy for every fetch a user or a provider can influence: URLs are
//! https only, without credentials, and in production reach no loopback, private, link-local or
//! otherwise internal address; the resolver refuses names that resolve to one when connecting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::error::FieldError;

/// Validates a webhook URL. With `allow_private` (local development only) plain http and local
/// addresses are accepted too. Names that resolve to internal addresses are refused again when a
/// delivery connects.
pub fn validate_url(raw: &str, field: &str, allow_private: bool) -> Result<String, FieldError> {
    let bad = |why: &str| FieldError::new(field, why);
    if raw.len() > 2048 {
        return Err(bad("must be at most 2048 characters"));
    }
    let url = url::Url::parse(raw).map_err(|_| bad("must be an absolute URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err(bad("must be an https URL")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials"));
    }
    let internal = match url.host() {
        None => return Err(bad("must name a host")),
        Some(url::Host::Ipv4(ip)) => is_internal(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost"
                || !name.contains('.')
                || [
                    ".localhost",
                    ".local",
                    ".internal",
                    ".localdomain",
                    ".home.arpa",
                ]
                .iter()
                .any(|s| name.ends_with(s))
        }
    };
    if internal && !allow_private {
        return Err(bad(
            "must not point at a loopback, private or link-local address",
        ));
    }
    Ok(url.to_string())
}

/// Whether an address is not on the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => internal_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || ip == Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0) // NAT64 prefix itself
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240
}

/// A DNS resolver that refuses names resolving to loopback, private or link-local addresses, so a
/// provider-supplied URL cannot reach inside our network (SSRF).
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if addresses.is_empty() {
                return Err("the name resolves to no public address".into());
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP clients of every outbound call, each with its timeouts and, in production, the
/// address policy: one per process.
pub struct Clients {
    /// Provider APIs (hosts the operator configured).
    pub api: reqwest::Client,
    /// Provider output files (hosts the provider named): no internal addresses in production.
    pub files: reqwest::Client,
    /// Our clients' webhook endpoints: 15 s, no redirects, no internal addresses in production.
    pub deliveries: reqwest::Client,
}

impl Clients {
    /// Clients with timeouts; with `allow_private` (local only) output files may come from
    /// loopback and private addresses. Fails rather than fall back to a client without the
    /// resolver and timeouts.
    pub fn new(allow_private: bool) -> anyhow::Result<Self> {
        let api = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the provider API client")?;
        let mut files = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120));
        if !allow_private {
            files = files.dns_resolver(Arc::new(PublicOnly)).redirect(
                reqwest::redirect::Policy::custom(|attempt| {
                    let allowed = attempt.previous().len() < 5
                        && validate_url(attempt.url().as_str(), "url", false).is_ok();
                    if allowed {
                        attempt.follow()
                    } else {
                        attempt.stop()
                    }
                }),
            );
        }
        let mut deliveries = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Lambent-Webhooks/1");
        if !allow_private {
            deliveries = deliveries.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            api,
            files: files.build().context("building the output files client")?,
            deliveries: deliveries
                .build()
                .context("building the webhook delivery client")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused() {
        use reqwest::dns::Resolve as _;
        use std::str::FromStr as _;
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        assert!(PublicOnly.resolve(name).await.is_err());
    }

    #[test]
    fn production_refuses_internal_and_plain_urls() {
        for url in [
            "http://example.com/hook",
            "https://localhost/hook",
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://metadata.google.internal/",
            "https://user:pw@example.com/hook",
            "ftp://example.com/hook",
            "not a url",
        ] {
            assert!(
                validate_url(url, "webhook_url", false).is_err(),
                "{url} passed"
            );
        }
        assert!(
            validate_url(
                "https://hooks.example.com/lambent?x=1",
                "webhook_url",
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn local_development_may_use_loopback() {
        assert!(validate_url("http://127.0.0.1:9000/hook", "webhook_url", true).is_ok());
        assert!(validate_url("ftp://127.0.0.1/hook", "webhook_url", true).is_err());
    }
}
