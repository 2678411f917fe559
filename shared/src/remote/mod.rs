//! Archives that travel over HTTP: imports fetched from a URL (or an S3
//! object, through a presigned URL), and exports sent to a URL. Streamed
//! both ways; never the whole archive in memory.

use std::time::Duration;

pub mod bounded;
mod guard;
mod s3;
pub mod source;

use guard::{blocked_cause, client, local_target, Blocked};

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
    let too_large = format!("the archive is larger than {limit} bytes");
    if response.content_length().is_some_and(|size| size > limit) {
        return Err(Error::PayloadTooLarge(too_large));
    }
    let pace = app.settings.remote.file_pace;
    let body = bounded::paced(response.bytes_stream(), limit, pace, too_large);
    app.blobs.put(key, body).await
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
    // A receiver that reads slowly holds the worker no longer than a slow
    // sender would.
    let mut request = client(app.settings.allow_local_requests)?
        .request(method, &target.url)
        .timeout(app.settings.remote.file_pace.deadline(size))
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
        let body = bounded::excerpt(response).await;
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
}
