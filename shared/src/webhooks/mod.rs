//! Outbound webhooks to our clients (Standard Webhooks): job events, account endpoints, signed
//! deliveries with retries; and the checks of client-supplied webhook URLs (SSRF): https only, no
//! credentials, and in production no loopback, private, link-local or otherwise internal address.

pub mod deliver;
pub mod endpoints;
pub mod events;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

#[cfg(test)]
mod tests {
    use super::*;

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
