//! The public-address guard for downloads. The output URLs come from the API's answer, so
//! while `api.base_url` is public they may reach only public addresses: never a private,
//! loopback, link-local or unspecified one, checked for literal addresses, for every address
//! a host name resolves to, and for every redirect. A hostile answer thus cannot make remixd
//! fetch from the local network. Fetching itself is [`crate::pipeline::download`]'s job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::redirect::{Action, Attempt, Policy};

/// Whether outputs may be fetched from private addresses, judged by the API's `base_url`:
/// yes when there is none (dry-run) or its host is itself a loopback or private address
/// (written as an address, or `localhost`), as for a local proxy or a test server.
#[must_use]
pub fn private_allowed(base_url: Option<&str>) -> bool {
    let Some(base) = base_url else {
        return true;
    };
    let Ok(url) = Url::parse(base) else {
        return false;
    };
    if let Some(ip) = host_ip(&url) {
        return non_public(ip).is_some();
    }
    let name = url.host_str().unwrap_or_default();
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// The URL's host when it is written as an address (the URL parser has already turned forms
/// such as `0x7f.1` or `2130706433` into dotted IPv4).
fn host_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// What kind of non-public address `ip` is (`"a loopback address"`, ...), if it is one.
#[must_use]
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) => non_public_v4(ip),
        IpAddr::V6(ip) => non_public_v6(ip),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // 100.64.0.0/10 is carrier-grade NAT space: private to some network, never public.
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some("an unspecified address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if let Some(v4) = embedded_v4(ip) {
        non_public_v4(v4)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Some("a private address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else {
        None
    }
}

/// The IPv4 address carried by an IPv4-mapped, IPv4-compatible or NAT64 (`64:ff9b::/96`)
/// address, which reaches that IPv4 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match ip.segments()[..6] {
        [0, 0, 0, 0, 0, 0 | 0xffff] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(v4),
        _ => None,
    }
}

/// Why an output's address is refused (`its host is 127.0.0.1, a loopback address`); carried
/// through reqwest's error chain and found again by [`find_refusal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotPublic(String);

/// The refusal for a URL whose host is written as a non-public address. Host names are the
/// resolver's to check (`PublicOnly`).
#[must_use]
pub fn literal_refusal(url: &Url, how: &str) -> Option<NotPublic> {
    let ip = host_ip(url)?;
    non_public(ip).map(|why| NotPublic(format!("{how} {ip}, {why}")))
}

/// Resolves host names for downloads, refusing a name if any of its addresses is not
/// public. The connection uses the very addresses checked, so a name cannot be re-pointed
/// between the check and the connect.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let refused = addrs
                .iter()
                .find_map(|a| non_public(a.ip()).map(|why| (a.ip(), why)));
            if let Some((ip, why)) = refused {
                return Err(NotPublic(format!("its host {host} resolves to {ip}, {why}")).into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Most redirects followed for one output.
const MAX_REDIRECTS: usize = 10;

/// The redirect policy: checks each hop's address. Redirects to other schemes never get
/// here: reqwest does not follow them, and the 3xx is then refused as a status.
#[must_use]
pub fn redirects(attempt: Attempt) -> Action {
    if let Some(refusal) = literal_refusal(attempt.url(), "it redirects to") {
        return attempt.error(refusal);
    }
    Policy::limited(MAX_REDIRECTS).redirect(attempt)
}

/// The client for downloads while private addresses are refused: public host names only,
/// redirects checked hop by hop. Built once.
///
/// # Errors
/// When reqwest cannot build the client.
pub fn client() -> Result<&'static reqwest::Client, reqwest::Error> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client);
    }
    let client = reqwest::Client::builder()
        .redirect(Policy::custom(redirects))
        .dns_resolver(Arc::new(PublicOnly))
        .user_agent(format!("remixd/{}", crate::VERSION))
        .build()?;
    Ok(CLIENT.get_or_init(|| client))
}

/// Our refusal, wherever reqwest and hyper wrapped it in their errors.
#[must_use]
pub fn find_refusal(err: &(dyn std::error::Error + 'static)) -> Option<NotPublic> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        if let Some(refusal) = e.downcast_ref::<NotPublic>() {
            return Some(refusal.clone());
        }
        // io::Error::source skips the error it wraps, so look inside it too.
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref());
        if let Some(refusal) = wrapped.and_then(|w| w.downcast_ref::<NotPublic>()) {
            return Some(refusal.clone());
        }
        cause = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_named() {
        let cases = [
            ("127.0.0.1", Some("loopback")),
            ("127.255.0.9", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.0.1", Some("private")),
            ("100.64.0.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::", Some("unspecified")),
            ("fe80::1", Some("link-local")),
            ("fc00::1", Some("private")),
            ("fd12:3456::1", Some("private")),
            ("fec0::1", Some("private")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:10.0.0.1", Some("private")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("2606:4700:4700::1111", None),
            ("::ffff:8.8.8.8", None),
        ];
        for (ip, want) in cases {
            let got = non_public(ip.parse().expect("ip"));
            match want {
                Some(word) => assert!(got.is_some_and(|w| w.contains(word)), "{ip}: {got:?}"),
                None => assert_eq!(got, None, "{ip}"),
            }
        }
    }

    #[test]
    fn private_outputs_are_allowed_only_for_a_private_base_url() {
        let cases = [
            (None, true),
            (Some("http://127.0.0.1:8080"), true),
            (Some("http://localhost:9"), true),
            (Some("http://[::1]:80/x"), true),
            (Some("https://10.0.0.5/api"), true),
            (Some("https://www.kkiai.com/ideogram"), false),
            (Some("https://api.ideogram.ai"), false),
            (Some("https://8.8.8.8"), false),
            (Some("https://localhost.example.com"), false),
            (Some("not a url"), false),
        ];
        for (base, want) in cases {
            assert_eq!(private_allowed(base), want, "{base:?}");
        }
    }
}
