//! The SSRF guard of outgoing webhooks: which URLs and addresses a
//! `callback_url` may reach. Checked when the URL is registered and again
//! at connect time (a resolver that refuses blocked answers), so a name
//! that resolves differently later (DNS rebinding) does not get through.
//!
//! Refused unless allowlisted: loopback, unspecified, private (RFC 1918),
//! shared (100.64/10), link-local (incl. 169.254.169.254, the cloud
//! metadata address), multicast, broadcast and reserved IPv4; IPv6
//! loopback, unspecified, link-local, site-local, unique-local (incl.
//! fd00:ec2::254), multicast, documentation and Teredo, and the IPv4 forms
//! inside IPv6 (mapped, compatible, NAT64, 6to4) by their IPv4 address.
//! Decimal, hex and octal IPv4 spellings are normalised by the URL parser
//! (WHATWG rules) before the check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// Not an absolute http(s) URL.
    #[error("callback_url: {0}")]
    BadUrl(String),
    /// It names or resolves to an address webhooks may not reach.
    #[error("callback_url: {host} is {reason}; webhooks only go to public addresses (or to the allowlist)")]
    Blocked {
        /// The host or address.
        host: String,
        /// What kind of address it is.
        reason: &'static str,
    },
    /// The name does not resolve.
    #[error("callback_url: cannot resolve {0}")]
    Unresolvable(String),
}

/// Networks and host names trusted despite the rules (internal receivers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<(IpAddr, u8)>,
    hosts: Vec<String>,
}

impl Allowlist {
    /// From entries: an address (`10.1.2.3`, `::1`), a network
    /// (`10.0.0.0/8`, `fd00::/8`) or a host name (`hooks.internal`).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut a = Self::default();
        for e in entries {
            let e = e.as_ref().trim();
            if e.is_empty() {
                continue;
            }
            let (addr, bits) = match e.split_once('/') {
                Some((addr, bits)) => (addr, Some(bits)),
                None => (e, None),
            };
            match addr.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let bits = match bits {
                        Some(b) => b
                            .parse::<u8>()
                            .ok()
                            .filter(|b| *b <= max)
                            .ok_or_else(|| format!("bad network {e:?}"))?,
                        None => max,
                    };
                    a.nets.push((ip, bits));
                }
                Err(_) if bits.is_none() && valid_host(e) => a.hosts.push(e.to_ascii_lowercase()),
                Err(_) => return Err(format!("{e:?} is not an address, network or host name")),
            }
        }
        Ok(a)
    }

    /// Whether nothing is allowlisted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.hosts.is_empty()
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets
            .iter()
            .any(|(net, bits)| in_net(ip, canonical(*net), *bits))
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.iter().any(|h| h == &host)
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// IPv4 inside IPv6 (mapped `::ffff:a.b.c.d`) as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn blocked(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => "an unspecified (0.0.0.0/8) address",
        (127, _, _) => "a loopback address",
        (10, _, _) => "a private address",
        (172, 16..=31, _) => "a private address",
        (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address (cloud metadata lives here)",
        (100, 64..=127, _) => "a shared (carrier NAT) address",
        (192, 0, 0) => "an IETF protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    };
    Some(reason)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return blocked_v4(v4);
    }
    let seg = ip.segments();
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // ::a.b.c.d (IPv4-compatible, deprecated): judged as the IPv4 address.
    if bits >> 32 == 0 {
        return blocked_v4(Ipv4Addr::from((bits & 0xffff_ffff) as u32))
            .or(Some("an IPv4-compatible address"));
    }
    // NAT64 64:ff9b::/96 and 64:ff9b:1::/48 reach IPv4 hosts.
    if seg[0] == 0x64 && seg[1] == 0xff9b {
        return blocked_v4(Ipv4Addr::from((bits & 0xffff_ffff) as u32)).or(Some("a NAT64 address"));
    }
    // 6to4 2002:AABB:CCDD::/48 embeds an IPv4 address.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from((u32::from(seg[1]) << 16) | u32::from(seg[2]));
        return blocked_v4(v4);
    }
    let reason = match seg[0] {
        0xfe80..=0xfebf => "a link-local address",
        0xfec0..=0xfeff => "a site-local address",
        0xfc00..=0xfdff => "a unique-local address (incl. fd00:ec2::254, cloud metadata)",
        0xff00..=0xffff => "a multicast address",
        0x2001 if seg[1] == 0 => "a Teredo address",
        0x2001 if seg[1] == 0x0db8 => "a documentation address",
        0x0100 if seg[1..4] == [0, 0, 0] => "a discard-only address",
        _ => return None,
    };
    Some(reason)
}

/// The guard: the allowlist and the checks.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Arc<Allowlist>,
}

impl Guard {
    /// A guard trusting `allow`.
    pub fn new(allow: Allowlist) -> Self {
        Self {
            allow: Arc::new(allow),
        }
    }

    /// Parses a callback URL and checks its host without resolving it:
    /// http(s) only, no addresses the rules refuse.
    pub fn parse(&self, raw: &str) -> Result<Url, SsrfError> {
        let url = Url::parse(raw).map_err(|e| SsrfError::BadUrl(format!("{e}: {raw:?}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SsrfError::BadUrl(format!(
                "only http and https are allowed, not {:?}",
                url.scheme()
            )));
        }
        match url.host() {
            None => return Err(SsrfError::BadUrl("no host".into())),
            Some(Host::Domain(d)) if self.allow.allows_host(d) => {}
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.');
                if d.eq_ignore_ascii_case("localhost")
                    || d.to_ascii_lowercase().ends_with(".localhost")
                {
                    return Err(SsrfError::Blocked {
                        host: d.to_string(),
                        reason: "a loopback name",
                    });
                }
            }
            Some(Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip))?,
        }
        Ok(url)
    }

    /// [`parse`](Self::parse), then resolves the host and checks every
    /// address it resolves to (as at registration).
    pub async fn check(&self, raw: &str) -> Result<Url, SsrfError> {
        let url = self.parse(raw)?;
        if let Some(Host::Domain(d)) = url.host() {
            if !self.allow.allows_host(d) {
                self.resolve(d, url.port_or_known_default().unwrap_or(80))
                    .await?;
            }
        }
        Ok(url)
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), SsrfError> {
        if self.allow.allows_ip(ip) {
            return Ok(());
        }
        match blocked(ip) {
            Some(reason) => Err(SsrfError::Blocked {
                host: host.to_string(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Resolves `host` and answers its addresses when every one is allowed.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsrfError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| SsrfError::Unresolvable(host.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(SsrfError::Unresolvable(host.to_string()));
        }
        if !self.allow.allows_host(host) {
            for a in &addrs {
                self.check_ip(&format!("{host} ({})", a.ip()), a.ip())?;
            }
        }
        Ok(addrs)
    }
}

/// The resolver of the webhook HTTP client: refuses names that resolve to
/// blocked addresses at connect time.
impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = guard.resolve(&host, 0).await?;
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(g: &Guard, url: &str) -> bool {
        matches!(g.parse(url), Err(SsrfError::Blocked { .. }))
    }

    #[test]
    fn every_spelling_of_a_private_address_is_refused() {
        let g = Guard::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://017700000001/",
            "http://0.0.0.0/",
            "http://0/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://100.100.100.200/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:7f00:1::]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[fe80::1]/",
            "http://[fec0::1]/",
            "http://[fc00::1]/",
            "http://[fd00:ec2::254]/",
            "http://[ff02::1]/",
            "http://[2001:db8::1]/",
            "http://[2001::1]/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            assert!(
                refused(&g, url),
                "{url} should be refused: {:?}",
                g.parse(url)
            );
        }
    }

    #[test]
    fn public_addresses_and_names_pass_and_other_schemes_do_not() {
        let g = Guard::default();
        for url in [
            "https://example.com/hook",
            "http://93.184.216.34:8080/x",
            "http://[2606:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
            "http://172.32.0.1/",
            "http://100.128.0.1/",
        ] {
            assert!(g.parse(url).is_ok(), "{url}: {:?}", g.parse(url));
        }
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "gopher://x/",
            "not a url",
            "http://",
        ] {
            assert!(matches!(g.parse(url), Err(SsrfError::BadUrl(_))), "{url}");
        }
    }

    #[test]
    fn the_allowlist_lets_trusted_receivers_through() {
        let allow =
            Allowlist::parse(&["127.0.0.1", "10.0.0.0/8", "hooks.internal", "fd00::/8"]).unwrap();
        let g = Guard::new(allow);
        for url in [
            "http://127.0.0.1:9000/",
            "http://[::ffff:127.0.0.1]/",
            "http://10.9.8.7/",
            "http://hooks.internal/x",
            "http://[fd12::1]/",
        ] {
            assert!(g.parse(url).is_ok(), "{url}");
        }
        assert!(refused(&g, "http://127.0.0.2/"));
        assert!(refused(&g, "http://192.168.0.1/"));
        assert!(Allowlist::parse(&["10.0.0.0/33"]).is_err());
        assert!(Allowlist::parse(&["not a host!"]).is_err());
    }

    #[tokio::test]
    async fn names_are_judged_by_what_they_resolve_to() {
        let g = Guard::default();
        // /etc/hosts maps localhost-like names to loopback on every machine
        // this runs on; "ip6-localhost" may be missing, so only check v4.
        let err = g.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(err, SsrfError::Blocked { .. }), "{err:?}");
        let allowed = Guard::new(Allowlist::parse(&["127.0.0.0/8", "::1"]).unwrap());
        assert!(allowed.resolve("localhost", 80).await.is_ok());
        assert!(matches!(
            g.resolve("no-such-host.invalid", 80).await,
            Err(SsrfError::Unresolvable(_))
        ));
    }

    #[tokio::test]
    async fn the_http_client_refuses_at_connect_time() {
        // What a name resolves to when the request is made is what counts
        // (DNS rebinding): the client's resolver is the guard.
        crate::llm::install_crypto();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = reqwest::Client::builder()
            .dns_resolver(Guard::default())
            .no_proxy()
            .build()
            .unwrap();
        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut refused = false;
        while let Some(s) = source {
            refused |= s.downcast_ref::<SsrfError>().is_some();
            source = s.source();
        }
        assert!(refused, "{err:?}");
        let allowed = reqwest::Client::builder()
            .dns_resolver(Guard::new(Allowlist::parse(&["localhost"]).unwrap()))
            .no_proxy()
            .build()
            .unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let _ = s
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        });
        let r = allowed
            .get(format!("http://localhost:{port}/"))
            .send()
            .await;
        assert_eq!(r.unwrap().status(), 204);
    }
}
