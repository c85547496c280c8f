//! Outbound HTTP to user-supplied URLs (media to send, webhooks) with a guard against
//! server-side request forgery: unless `ALLOW_PRIVATE_NETWORK_URLS=true`, no request may
//! reach a loopback, private, link-local or otherwise non-public address — checked at
//! connect time through the DNS resolver (so redirects and DNS rebinding are covered) and
//! for literal IP hosts on every hop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect;

/// Why an outbound request was refused or failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum OutboundError {
    #[error("URL is not valid: {0}")]
    InvalidUrl(String),
    #[error(
        "URL points to a private or local network address ({0}); set ALLOW_PRIVATE_NETWORK_URLS=true to allow it"
    )]
    PrivateAddress(String),
    #[error("the file is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the request timed out")]
    Timeout,
    #[error("the server answered {0}")]
    Status(u16),
    #[error("request failed: {0}")]
    Network(String),
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            // Prefixes that carry an IPv4 address a gateway reaches on the sender's
            // behalf: judge that address. NAT64's well-known prefix 64:ff9b::/96 (RFC
            // 6052; on IPv6-only hosts it reaches private IPv4 networks too) and 6to4's
            // 2002::/16 (RFC 3056). The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215)
            // is local by definition.
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public_v4(embedded(s[6], s[7]));
            }
            if s[..3] == [0x64, 0xff9b, 1] {
                return false;
            }
            if s[0] == 0x2002 {
                return is_public_v4(embedded(s[1], s[2]));
            }
            let seg0 = s[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || seg0 == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// Which addresses outbound requests may reach: [`is_public_ip`] in production; tests
/// inject stricter rules to exercise the guard on loopback.
pub type AddressRule = fn(IpAddr) -> bool;

/// A resolver that drops addresses its rule refuses, so no connection can reach them
/// whatever the name resolves to at connect time.
struct GuardedResolver {
    allowed: AddressRule,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            let reachable: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| allowed(a.ip())).collect();
            if reachable.is_empty() {
                let err = OutboundError::PrivateAddress(host);
                return Err(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(reachable.into_iter()) as Addrs)
        })
    }
}

/// Checks a URL's scheme and, for literal IP hosts, the address.
pub fn check_url(url: &reqwest::Url, allow_private: bool) -> Result<(), OutboundError> {
    check_url_with(url, (!allow_private).then_some(is_public_ip as AddressRule))
}

/// [`check_url`] with an explicit rule; None allows every address.
fn check_url_with(url: &reqwest::Url, rule: Option<AddressRule>) -> Result<(), OutboundError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(OutboundError::InvalidUrl(
            "only http and https URLs are allowed".into(),
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| OutboundError::InvalidUrl("the URL has no host".into()))?;
    let Some(allowed) = rule else { return Ok(()) };
    let literal = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        // A trailing dot names the same host (`localhost.` is `localhost`).
        url::Host::Domain(d) if is_localhost(d.trim_end_matches('.')) => {
            return Err(OutboundError::PrivateAddress(d.to_owned()));
        }
        url::Host::Domain(_) => None,
    };
    match literal {
        Some(ip) if !allowed(ip) => Err(OutboundError::PrivateAddress(ip.to_string())),
        _ => Ok(()),
    }
}

/// `localhost` and its subdomains (RFC 6761), in any case.
fn is_localhost(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "localhost" || lower.ends_with(".localhost")
}

/// [`check_url`], and when the host is a name, also where it resolves now: a name whose
/// every address is refused is refused. A name that does not resolve (yet) passes; the
/// resolver guard checks it again at every connection.
pub async fn check_url_resolving(
    url: &reqwest::Url,
    allow_private: bool,
) -> Result<(), OutboundError> {
    check_url(url, allow_private)?;
    if allow_private {
        return Ok(());
    }
    let (Some(url::Host::Domain(name)), Some(port)) = (url.host(), url.port_or_known_default())
    else {
        return Ok(());
    };
    let lookup = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::lookup_host((name, port)),
    )
    .await;
    if let Ok(Ok(addrs)) = lookup {
        let addrs: Vec<SocketAddr> = addrs.collect();
        if !addrs.is_empty() && addrs.iter().all(|a| !is_public_ip(a.ip())) {
            return Err(OutboundError::PrivateAddress(name.to_owned()));
        }
    }
    Ok(())
}

/// Maximum redirects followed by an outbound request.
const MAX_REDIRECTS: usize = 5;

/// An HTTP client for user-supplied URLs: the SSRF guard (unless allowed), bounded
/// redirects, connect and request timeouts, keep-alive pooling.
pub fn guarded_client(allow_private: bool, timeout: Duration) -> Result<reqwest::Client, String> {
    guarded_client_with(
        (!allow_private).then_some(is_public_ip as AddressRule),
        timeout,
    )
}

/// [`guarded_client`] with an explicit address rule; None allows every address.
pub fn guarded_client_with(
    rule: Option<AddressRule>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            return attempt.error(OutboundError::Network("too many redirects".into()));
        }
        match check_url_with(attempt.url(), rule) {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    });
    let mut builder = reqwest::Client::builder()
        .redirect(policy)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("wagate/", env!("CARGO_PKG_VERSION")));
    if let Some(allowed) = rule {
        builder = builder.dns_resolver(Arc::new(GuardedResolver { allowed }));
    }
    builder.build().map_err(|e| e.to_string())
}

/// Turns a reqwest error into the reason a user should read, finding a refusal of the
/// guard anywhere in the error chain.
pub fn explain(e: &reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(o) = err.downcast_ref::<OutboundError>() {
            return o.clone();
        }
        source = err.source();
    }
    if e.is_timeout() {
        OutboundError::Timeout
    } else {
        OutboundError::Network(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::",
            // NAT64 and 6to4 forms of private IPv4 addresses.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::10.1.2.3",
            "64:ff9b:1::808:808",
            "2002:a00:1::",
            "2002:7f00:1::1",
        ] {
            let ip: IpAddr = private.parse().expect("ip");
            assert!(!is_public_ip(ip), "{private} must not be public");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "64:ff9b::1.1.1.1",
            "2002:808:808::1",
        ] {
            let ip: IpAddr = public.parse().expect("ip");
            assert!(is_public_ip(ip), "{public} is public");
        }
    }

    #[test]
    fn checks_urls() {
        let u = |s: &str| reqwest::Url::parse(s).expect("url");
        assert!(check_url(&u("https://example.com/a.jpg"), false).is_ok());
        assert!(matches!(
            check_url(&u("http://127.0.0.1:8080/"), false),
            Err(OutboundError::PrivateAddress(_))
        ));
        assert!(matches!(
            check_url(&u("http://[::1]/"), false),
            Err(OutboundError::PrivateAddress(_))
        ));
        for local in [
            "http://localhost/",
            "http://localhost./",
            "http://LocalHost../",
            "http://api.localhost/",
            "http://api.localhost./",
        ] {
            assert!(
                matches!(
                    check_url(&u(local), false),
                    Err(OutboundError::PrivateAddress(_))
                ),
                "{local}"
            );
        }
        // Numeric spellings are parsed to the address they mean.
        for numeric in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
        ] {
            assert!(
                matches!(
                    check_url(&u(numeric), false),
                    Err(OutboundError::PrivateAddress(_))
                ),
                "{numeric}"
            );
        }
        assert!(check_url(&u("http://notlocalhost.example/"), false).is_ok());
        assert!(matches!(
            check_url(&u("http://169.254.169.254/latest"), false),
            Err(OutboundError::PrivateAddress(_))
        ));
        assert!(check_url(&u("http://127.0.0.1:8080/"), true).is_ok());
        assert!(matches!(
            check_url(&u("ftp://example.com/"), true),
            Err(OutboundError::InvalidUrl(_))
        ));
        assert!(matches!(
            check_url(&u("file:///etc/passwd"), true),
            Err(OutboundError::InvalidUrl(_))
        ));
    }

    /// Only 127.0.0.2 counts as reachable: it stands in for a public address, so the
    /// guard can be exercised against loopback servers (all of 127/8 is loopback).
    fn only_127_0_0_2(ip: IpAddr) -> bool {
        ip == IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
    }

    /// A server on 127.0.0.2 that answers `/ok` and redirects `/to/<url>` to `<url>`.
    async fn redirecting_server() -> SocketAddr {
        use axum::extract::Path;
        use axum::response::Redirect;
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "fine" }))
            .route(
                "/to/{*target}",
                axum::routing::get(|Path(t): Path<String>| async move { Redirect::temporary(&t) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn redirects_to_refused_addresses_are_refused() {
        let addr = redirecting_server().await;
        let client =
            guarded_client_with(Some(only_127_0_0_2), Duration::from_secs(5)).expect("client");
        let ok = client
            .get(format!("http://{addr}/ok"))
            .send()
            .await
            .expect("allowed");
        assert_eq!(ok.text().await.expect("body"), "fine");
        // A redirect to 127.0.0.1 (refused by the rule) is not followed.
        let hop = format!("http://{addr}/to/http://127.0.0.1:{}/ok", addr.port());
        let err = client.get(hop).send().await.expect_err("refused");
        assert!(
            matches!(explain(&err), OutboundError::PrivateAddress(a) if a == "127.0.0.1"),
            "{err}"
        );
        // A redirect to a name: the resolver drops every address the rule refuses.
        let by_name = format!("http://{addr}/to/http://localhost:{}/ok", addr.port());
        let err = client.get(by_name).send().await.expect_err("refused");
        assert!(
            matches!(explain(&err), OutboundError::PrivateAddress(_)),
            "{err}"
        );
        // Numeric spellings of a refused address, at the end of a chain of allowed
        // hops: every hop is checked, not only the first.
        let port = addr.port();
        for target in [
            format!("http://2130706433:{port}/ok"),
            format!("http://0x7f.1:{port}/ok"),
            format!("http://127.1:{port}/ok"),
            format!("http://[::ffff:127.0.0.1]:{port}/ok"),
        ] {
            let chain = format!("http://{addr}/to/http://{addr}/to/{target}");
            let err = client.get(&chain).send().await.expect_err("refused");
            assert!(
                matches!(explain(&err), OutboundError::PrivateAddress(_)),
                "{target}: {err}"
            );
        }
        // Another scheme is no way around it (the redirect is not followed: the caller
        // gets the 3xx, which no fetch or delivery takes for success), and chains are
        // bounded.
        match client
            .get(format!("http://{addr}/to/file:///etc/passwd"))
            .send()
            .await
        {
            Ok(resp) => assert!(resp.status().is_redirection(), "{resp:?}"),
            Err(err) => assert!(
                matches!(explain(&err), OutboundError::InvalidUrl(_)),
                "{err}"
            ),
        }
        let mut endless = format!("http://{addr}/ok");
        for _ in 0..=MAX_REDIRECTS {
            endless = format!("http://{addr}/to/{endless}");
        }
        let err = client.get(endless).send().await.expect_err("too many");
        assert!(explain(&err).to_string().contains("redirect"), "{err}");
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_refused_at_connect_time() {
        let addr = redirecting_server().await;
        // Skip the name check of check_url: go straight through the resolver.
        let client = guarded_client_with(Some(|_| false), Duration::from_secs(5)).expect("client");
        let err = client
            .get(format!("http://localhost:{}/ok", addr.port()))
            .send()
            .await
            .expect_err("refused");
        assert!(
            matches!(explain(&err), OutboundError::PrivateAddress(h) if h == "localhost"),
            "{err}"
        );
        // With no rule (ALLOW_PRIVATE_NETWORK_URLS=true) a loopback server is reached.
        let open = guarded_client_with(None, Duration::from_secs(5)).expect("client");
        let ok = open
            .get(format!("http://{addr}/ok"))
            .send()
            .await
            .expect("allowed");
        assert!(ok.status().is_success());
    }
}
