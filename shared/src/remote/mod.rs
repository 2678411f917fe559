//! Archives that travel over HTTP: imports fetched from a URL (or an S3
//! object, through a presigned URL), and exports sent to a URL. Streamed
//! both ways; never the whole archive in memory.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

mod s3;

pub use crate::domain::UploadTarget;
use crate::{redact, App, Error, Result};
pub use s3::{check_s3_object, presign_s3_get, S3Object};

/// An `http`/`https` URL with a host, or a 400 naming the parameter. Unless
/// `allow_local` (`ALLOW_LOCAL_REQUESTS`), a URL naming this machine or a
/// private network is refused here too; one whose name only resolves there
/// is refused when the worker connects (`client`).
pub fn check_url(raw: &str, parameter: &str, allow_local: bool) -> Result<reqwest::Url> {
    let invalid = || Error::InvalidParameter(format!("{parameter} is invalid"));
    let url = reqwest::Url::parse(raw).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid());
    }
    if !allow_local {
        if let Some(reason) = local_target(&url) {
            return Err(Error::BadRequest(format!(
                "{parameter} is blocked: {reason}"
            )));
        }
    }
    Ok(url)
}

/// The content types GitLab takes a remote import's file as
/// (`Import::GitlabProjects::RemoteFileValidator`).
const ARCHIVE_CONTENT_TYPES: [&str; 3] = [
    "application/gzip",
    "application/x-tar",
    "application/x-gzip",
];

/// How long the `HEAD` of a remote import's file may take (GitLab gives
/// it one second; an answer within the API's own time limit is enough).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// GitLab's checks of a remote import's file, before any project is
/// created (`FileAcquisitionStrategies::RemoteFile` and
/// `RemoteFileValidator`): an `https` URL (`http` too when local requests
/// are allowed) that is not blocked, whose `HEAD` answers an archive's
/// content type and a size of at least one byte and at most `limit`. An
/// answer from S3 is taken as it is, as GitLab does: a presigned GET URL
/// refuses a `HEAD`. Each refusal is GitLab's `400` text.
pub async fn check_remote_file(url: &str, limit: u64, allow_local: bool) -> Result<reqwest::Url> {
    let blocked = |reason: &str| Error::BadRequest(format!("File url is blocked: {reason}"));
    let url = reqwest::Url::parse(url).map_err(|_| blocked("URI is invalid"))?;
    let scheme_allowed = url.scheme() == "https" || (allow_local && url.scheme() == "http");
    if !scheme_allowed {
        return Err(blocked("Only allowed schemes are https"));
    }
    if url.host_str().is_none() {
        return Err(blocked("URI is invalid"));
    }
    if !allow_local {
        if let Some(reason) = local_target(&url) {
            return Err(blocked(reason));
        }
    }
    let headers_failed = |detail: String| {
        Error::BadRequest(format!(
            "Failed to retrive headers: {}",
            redact::text(&detail)
        ))
    };
    let client = client(allow_local)?;
    let response = match client.head(url.clone()).timeout(HEAD_TIMEOUT).send().await {
        Ok(response) => response,
        Err(err) => {
            return Err(match blocked_cause(&err) {
                // The resolver's refusal names the host first.
                Some(Blocked(message)) => blocked(
                    message
                        .split_once(" is blocked: ")
                        .map_or(message, |(_, r)| r),
                ),
                None => headers_failed(error_chain(&err)),
            });
        }
    };
    let headers = response.headers();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("server") == Some("AmazonS3") && header("x-amz-request-id").is_some() {
        return Ok(url);
    }
    if !response.status().is_success() {
        return Err(headers_failed(response.status().to_string()));
    }
    check_archive_headers(headers, limit)?;
    Ok(url)
}

/// An error and its causes, as one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        text.push_str(": ");
        text.push_str(&err.to_string());
        cause = err.source();
    }
    text
}

/// A size as Rails' `number_to_human_size` writes it: 1,024-based units,
/// three significant digits, no trailing zeros (`1 Byte`, `5 GB`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1024 {
        return format!("{bytes} {}", if bytes == 1 { "Byte" } else { "Bytes" });
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    value /= 1024.0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text} {}", UNITS[unit])
}

/// Why a URL's host is off limits, if it is: named `localhost`, or an
/// address literal that is not public. As GitLab's URL blocker words it.
fn local_target(url: &reqwest::Url) -> Option<&'static str> {
    let host = url.host_str()?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return local_address(ip);
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost")).then_some(LOCALHOST_REFUSED)
}

const LOCALHOST_REFUSED: &str = "Requests to localhost are not allowed";
const LOCAL_NETWORK_REFUSED: &str = "Requests to the local network are not allowed";

/// Why an address is off limits, if it is: this machine, a private or
/// shared network, link-local (where cloud metadata services answer), or
/// anything not routable on the internet.
fn local_address(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let loopback = ip.is_loopback() || ip.is_unspecified();
    let local = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT), IETF protocol
                // assignments, benchmarking (used by VPNs), and 240/4.
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let [first, second, ..] = v6.segments();
            v6.is_multicast()
                // Unique local (fc00::/7, AWS's fd00:ec2::254 among them),
                // link-local (fe80::/10), the old site-local (fec0::/10).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // Documentation (2001:db8::/32), Teredo (2001::/32), discard
                // (100::/64), and the rest of ::/8 not unwrapped above.
                || (first == 0x2001 && (second == 0x0db8 || second == 0))
                || first == 0x0100
                || first < 0x0100
        }
    };
    if loopback {
        Some(LOCALHOST_REFUSED)
    } else if local {
        Some(LOCAL_NETWORK_REFUSED)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 one leads to, in the forms that reach IPv4
/// hosts: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64
/// (64:ff9b::/96 and 64:ff9b:1::/48) and 6to4 (2002:AABB:CCDD::/16).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let segments = v6.segments();
    let last = |s: &[u16; 8]| std::net::Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return Some(mapped);
    }
    match segments {
        [0, 0, 0, 0, 0, 0, high, _] if high != 0 => Some(last(&segments)),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last(&segments)),
        [0x64, 0xff9b, 1, ..] => Some(last(&segments)),
        [0x2002, high, low, ..] => {
            Some(std::net::Ipv4Addr::from(((high as u32) << 16) | low as u32))
        }
        _ => None,
    }
}

/// A request refused because it would reach this machine or a private
/// network: permanent, and said as such to the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Blocked(String);

/// Resolves names as the system does, on a thread of its own: a name server
/// that never answers must not hold one of the runtime's few blocking
/// threads. Unless local requests are allowed it keeps only public
/// addresses, so a name that points into this machine or its network (or
/// is re-pointed there after the request was accepted) is never connected
/// to.
struct Resolver {
    public_only: bool,
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let public_only = self.public_only;
        Box::pin(async move {
            let lookup = host.clone();
            let found: Vec<SocketAddr> = crate::runtime::spawn_thread("dns", move || {
                std::net::ToSocketAddrs::to_socket_addrs(&(lookup.as_str(), 0))
                    .map(Iterator::collect::<Vec<_>>)
            })
            .join()
            .await??;
            if !public_only {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| local_address(addr.ip()).is_none())
                .collect();
            if public.is_empty() && !found.is_empty() {
                let reason = local_address(found[0].ip()).unwrap_or(LOCAL_NETWORK_REFUSED);
                return Err(Box::new(Blocked(format!("{host} is blocked: {reason}"))) as _);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// GitLab follows up to 10 redirects; each target is checked like the
/// first URL (a redirect to an address literal bypasses the resolver).
const MAX_REDIRECTS: usize = 10;

fn client(allow_local: bool) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .dns_resolver(Arc::new(Resolver {
            public_only: !allow_local,
        }));
    let builder = if allow_local {
        builder
    } else {
        // A proxy would resolve the names itself, past the resolver.
        builder
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if let Some(reason) = local_target(attempt.url()) {
                    let message = format!(
                        "redirected to {}: {reason}",
                        redact::url(attempt.url().as_str())
                    );
                    attempt.error(Blocked(message))
                } else if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
    };
    builder.build().map_err(Error::internal)
}

/// The refusal behind a failed request, if it was one.
fn blocked_cause(err: &reqwest::Error) -> Option<&Blocked> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(err) = cause {
        if let Some(blocked) = err.downcast_ref::<Blocked>() {
            return Some(blocked);
        }
        cause = err.source();
    }
    None
}

/// A failed transfer: a refusal by the other side is permanent, anything
/// else (network, 5xx, 429) is worth a retry.
fn transfer_error(what: &str, status: Option<reqwest::StatusCode>, detail: String) -> Error {
    match status {
        Some(status)
            if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS =>
        {
            Error::BadRequest(format!("{what}: {status} {}", redact::text(&detail)))
        }
        _ => Error::Storage(format!("{what}: {}", redact::text(&detail))),
    }
}

/// Downloads `url` into the blob store at `key`, at most `limit` bytes.
pub async fn fetch_into(app: &App, url: &str, key: &str, limit: u64) -> Result<u64> {
    // Checked again when used: it may have been accepted before local
    // requests were refused.
    check_url(url, &redact::url(url), app.settings.allow_local_requests)?;
    let client = client(app.settings.allow_local_requests)?;
    let response = exchange("downloading the archive failed", client.get(url)).await?;
    if response.content_length().is_some_and(|size| size > limit) {
        return Err(Error::PayloadTooLarge(format!(
            "the archive is larger than {limit} bytes"
        )));
    }
    let mut seen = 0u64;
    let body = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(std::io::Error::other(format!(
                "the archive is larger than {limit} bytes"
            )));
        }
        Ok(chunk)
    });
    app.blobs.put(key, Box::pin(body)).await
}

/// Sends the blob at `key` (`size` bytes) to the upload target, as GitLab
/// does: `Content-Type: application/gzip` and a `Content-Length`.
pub async fn send_blob(app: &App, key: &str, size: u64, target: &UploadTarget) -> Result<()> {
    check_url(
        &target.url,
        &redact::url(&target.url),
        app.settings.allow_local_requests,
    )?;
    let method = reqwest::Method::from_bytes(target.method.as_bytes()).map_err(Error::internal)?;
    let body = reqwest::Body::wrap_stream(app.blobs.get(key).await?);
    let mut request = client(app.settings.allow_local_requests)?
        .request(method, &target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/gzip")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(body);
    for (name, value) in &target.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    exchange("uploading the export failed", request).await?;
    Ok(())
}

/// Sends `request`; a network error or an unsuccessful answer (with the
/// start of its body) becomes the error `transfer_error` says it is.
async fn exchange(what: &str, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
    let response = request
        .send()
        .await
        .map_err(|err| match blocked_cause(&err) {
            Some(blocked) => Error::BadRequest(format!("{what}: {blocked}")),
            None => transfer_error(what, None, err.without_url().to_string()),
        })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let detail: String = body.chars().take(200).collect();
        return Err(transfer_error(what, Some(status), detail));
    }
    Ok(response)
}

/// GitLab's `RemoteFileValidator` on a file's headers: a size of at least
/// one byte and at most `limit`, and an archive's content type.
pub(crate) fn check_archive_headers(
    headers: &reqwest::header::HeaderMap,
    limit: u64,
) -> Result<()> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let length: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if length == 0 {
        return Err(Error::BadRequest(
            "Content length is too small (should be at least 1 Byte)".into(),
        ));
    }
    if length > limit {
        return Err(Error::BadRequest(format!(
            "Content length is too big (should be at most {})",
            human_size(limit)
        )));
    }
    let content_type = header("content-type").unwrap_or_default();
    if !ARCHIVE_CONTENT_TYPES.contains(&content_type) {
        return Err(Error::BadRequest(format!(
            "Content type '{content_type}' not allowed. (Allowed: {})",
            ARCHIVE_CONTENT_TYPES.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_rails_writes_them() {
        use super::human_size;
        assert_eq!(human_size(1), "1 Byte");
        assert_eq!(human_size(2), "2 Bytes");
        assert_eq!(human_size(1536), "1.5 KB");
        assert_eq!(human_size(1500), "1.46 KB");
        assert_eq!(human_size(5 << 30), "5 GB");
        assert_eq!(human_size(10 << 30), "10 GB");
        assert_eq!(human_size(150 << 20), "150 MB");
    }

    use super::*;

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(check_url("https://example.com/x.tar.gz", "url", false).is_ok());
        assert!(check_url("http://127.0.0.1:8080/x", "url", true).is_ok());
        for bad in ["file:///etc/passwd", "ftp://x/y", "not a url", "http://"] {
            assert!(check_url(bad, "url", true).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_public_addresses_are_reachable() {
        for public in ["8.8.8.8", "52.216.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(local_address(public.parse().unwrap()), None, "{public}");
        }
        for local in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.1",
        ] {
            let ip = local.parse().unwrap();
            assert_eq!(local_address(ip), Some(LOCALHOST_REFUSED), "{local}");
        }
        for local in [
            "10.0.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "0.1.2.3",
            "192.0.2.1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
        ] {
            let ip = local.parse().unwrap();
            assert_eq!(local_address(ip), Some(LOCAL_NETWORK_REFUSED), "{local}");
        }
        assert_eq!(local_address("100.128.0.1".parse().unwrap()), None);
        // IPv6 forms that lead to an IPv4 host are judged by that host.
        for embedded in [
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::7f00:1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "fec0::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(
                local_address(embedded.parse().unwrap()).is_some(),
                "{embedded}"
            );
        }
        assert_eq!(local_address("64:ff9b::808:808".parse().unwrap()), None);
        assert_eq!(local_address("2002:808:808::1".parse().unwrap()), None);
    }

    /// A name that only resolves into this machine is never connected to,
    /// whatever the URL looked like when it was accepted.
    #[tokio::test]
    async fn names_resolving_to_this_machine_are_not_connected_to() {
        use reqwest::dns::Resolve;
        let name = "localhost".parse().unwrap();
        let refused = match (Resolver { public_only: true }).resolve(name).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(err) => err.to_string(),
        };
        assert!(refused.contains("localhost is blocked"), "{refused}");

        let client = client(false).unwrap();
        let err = client.get("http://localhost:9/x").send().await.unwrap_err();
        let blocked = blocked_cause(&err).expect("the refusal is the cause");
        assert!(
            blocked.to_string().contains("localhost is blocked"),
            "{blocked}"
        );

        // Allowed, the same name resolves (and is refused by nobody here).
        let addrs = Resolver { public_only: false }
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap();
        assert!(addrs.into_iter().all(|addr| addr.ip().is_loopback()));
    }
}
