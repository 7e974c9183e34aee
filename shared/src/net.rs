//! The one outbound-address policy for every fetch a user or a provider can influence: URLs are
//! https only, without credentials, and in production reach no loopback, private, link-local or
//! otherwise internal address; the resolver refuses names that resolve to one when connecting.

use std::net::{IpAddr, SocketAddr};
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

/// Every range that is not globally reachable unicast, from IANA's IPv4 and IPv6 Special-Purpose
/// Address Registries (as of 2024-2025: every entry whose "Globally Reachable" is False or N/A,
/// the partly global blocks whole), plus multicast and the ranges that carry an IPv4 address
/// inside IPv6 (IPv4-compatible, IPv4-translated, NAT64, 6to4, Teredo) since a translator may
/// deliver those to any IPv4 address. One table: every outbound fetch a user or a provider can
/// steer is checked against it (URL literals and resolved names alike).
pub const INTERNAL_RANGES: &[&str] = &[
    // IPv4 (RFC 6890 and successors)
    "0.0.0.0/8",       // "this network"
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // shared address space (carrier-grade NAT)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local (cloud metadata at 169.254.169.254)
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation (TEST-NET-1)
    "192.88.99.0/24",  // 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation (TEST-NET-2)
    "203.0.113.0/24",  // documentation (TEST-NET-3)
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, and 255.255.255.255 broadcast
    // IPv6 (RFC 6890 and successors)
    "::/128",          // unspecified
    "::1/128",         // loopback
    "::/96",           // IPv4-compatible (deprecated): ::a.b.c.d
    "::ffff:0:0/96",   // IPv4-mapped (checked by its IPv4 address first)
    "::ffff:0:0:0/96", // IPv4-translated (SIIT)
    "64:ff9b::/96",    // NAT64 well-known prefix
    "64:ff9b:1::/48",  // NAT64 local-use prefix
    "100::/64",        // discard-only
    "2001::/23",       // IETF protocol assignments (Teredo 2001::/32 included)
    "2001:db8::/32",   // documentation
    "2002::/16",       // 6to4
    "3fff::/20",       // documentation
    "5f00::/16",       // SRv6 SIDs
    "fc00::/7",        // unique local
    "fe80::/10",       // link-local
    "fec0::/10",       // site-local (deprecated)
    "ff00::/8",        // multicast
];

static INTERNAL: std::sync::LazyLock<Vec<ipnet::IpNet>> = std::sync::LazyLock::new(|| {
    INTERNAL_RANGES
        .iter()
        .map(|range| range.parse().expect("the table's ranges parse"))
        .collect()
});

/// Whether an address is not on the public internet (in [`INTERNAL_RANGES`]).
pub fn is_internal(ip: IpAddr) -> bool {
    let ip = match ip {
        // An IPv4-mapped address is that IPv4 address.
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    INTERNAL.iter().any(|range| range.contains(&ip))
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
    fn the_address_table_refuses_every_special_purpose_range() {
        for ip in [
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.251",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:0:7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(is_internal(ip), "{ip} passed");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "192.1.0.1",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert!(!is_internal(ip), "{ip} refused");
        }
    }

    #[test]
    fn internal_literals_in_any_spelling_are_refused() {
        for url in [
            "https://2130706433/",           // 127.0.0.1 as one number
            "https://0x7f.1/",               // hex and short forms
            "https://0177.0.0.1/",           // octal
            "https://[::127.0.0.1]/",        // IPv4-compatible
            "https://[64:ff9b::a9fe:a9fe]/", // NAT64 of the metadata address
            "https://[2002:a9fe:a9fe::]/",   // 6to4 of it
            "https://[fec0::1]/",            // site-local
        ] {
            assert!(validate_url(url, "url", false).is_err(), "{url} passed");
        }
    }

    #[test]
    fn local_development_may_use_loopback() {
        assert!(validate_url("http://127.0.0.1:9000/hook", "webhook_url", true).is_ok());
        assert!(validate_url("ftp://127.0.0.1/hook", "webhook_url", true).is_err());
    }
}
