//! Archives that travel over HTTP: imports fetched from a URL (or an S3
//! object, through a presigned URL), and exports sent to a URL. Streamed
//! both ways; never the whole archive in memory.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

pub use crate::domain::UploadTarget;
use crate::{App, Error, Result};

/// An `http`/`https` URL with a host, or a 400 naming the parameter.
pub fn check_url(raw: &str, parameter: &str) -> Result<reqwest::Url> {
    let invalid = || Error::BadRequest(format!("{parameter} is invalid"));
    let url = reqwest::Url::parse(raw).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid());
    }
    Ok(url)
}

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .build()
        .map_err(Error::internal)
}

/// A failed transfer: a refusal by the other side is permanent, anything
/// else (network, 5xx, 429) is worth a retry.
fn transfer_error(what: &str, status: Option<reqwest::StatusCode>, detail: String) -> Error {
    match status {
        Some(status)
            if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS =>
        {
            Error::BadRequest(format!("{what}: {status} {detail}"))
        }
        _ => Error::Storage(format!("{what}: {detail}")),
    }
}

/// Downloads `url` into the blob store at `key`, at most `limit` bytes.
pub async fn fetch_into(app: &App, url: &str, key: &str, limit: u64) -> Result<u64> {
    let response = exchange("downloading the archive failed", client()?.get(url)).await?;
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
    let method = reqwest::Method::from_bytes(target.method.as_bytes()).map_err(Error::internal)?;
    let body = reqwest::Body::wrap_stream(app.blobs.get(key).await?);
    let mut request = client()?
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
        .map_err(|err| transfer_error(what, None, err.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let detail: String = body.chars().take(200).collect();
        return Err(transfer_error(what, Some(status), detail));
    }
    Ok(response)
}

/// An S3 object to import from (`POST /projects/remote-import-s3`).
#[derive(Debug, Clone)]
pub struct S3Object {
    pub region: String,
    pub bucket: String,
    pub key: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// RFC 3986 unreserved characters stay; S3 keeps `/` in paths.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
const URI_PATH: &AsciiSet = &URI_COMPONENT.remove(b'/');

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// A presigned GET URL (AWS Signature Version 4, query string) for the
/// object, so the worker fetches it like any URL and the secret key is
/// never stored. `endpoint` (an emulator, path-style) replaces AWS's.
pub fn presign_s3_get(
    object: &S3Object,
    endpoint: Option<&str>,
    at: DateTime<Utc>,
    expires_in: Duration,
) -> Result<String> {
    let (base, host, path) = match endpoint {
        Some(endpoint) => {
            let url = check_url(endpoint, "endpoint")?;
            let host = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_owned(),
            };
            let path = format!("/{}/{}", object.bucket, object.key);
            (format!("{}://{host}", url.scheme()), host, path)
        }
        None => {
            let host = match object.region.as_str() {
                "us-east-1" => format!("{}.s3.amazonaws.com", object.bucket),
                region => format!("{}.s3.{region}.amazonaws.com", object.bucket),
            };
            (format!("https://{host}"), host, format!("/{}", object.key))
        }
    };
    let date = at.format("%Y%m%d").to_string();
    let stamp = at.format("%Y%m%dT%H%M%SZ").to_string();
    let scope = format!("{date}/{}/s3/aws4_request", object.region);
    let mut query = [
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
        (
            "X-Amz-Credential",
            format!("{}/{scope}", object.access_key_id),
        ),
        ("X-Amz-Date", stamp.clone()),
        ("X-Amz-Expires", expires_in.as_secs().to_string()),
        ("X-Amz-SignedHeaders", "host".to_owned()),
    ]
    .iter()
    .map(|(k, v)| {
        format!(
            "{}={}",
            utf8_percent_encode(k, URI_COMPONENT),
            utf8_percent_encode(v, URI_COMPONENT)
        )
    })
    .collect::<Vec<_>>();
    query.sort();
    let query = query.join("&");
    let canonical_path = utf8_percent_encode(&path, URI_PATH).to_string();
    let canonical_request =
        format!("GET\n{canonical_path}\n{query}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", object.secret_access_key).as_bytes(),
        &date,
    );
    for part in [object.region.as_str(), "s3", "aws4_request"] {
        key = hmac(&key, part);
    }
    let signature = hex::encode(hmac(&key, &string_to_sign));
    Ok(format!(
        "{base}{canonical_path}?{query}&X-Amz-Signature={signature}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// AWS's own example ("Authenticating Requests: Using Query Parameters").
    #[test]
    fn presigned_urls_match_aws_documentation() {
        let object = S3Object {
            region: "us-east-1".into(),
            bucket: "examplebucket".into(),
            key: "test.txt".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        };
        let at = Utc.with_ymd_and_hms(2013, 5, 24, 0, 0, 0).unwrap();
        let url = presign_s3_get(&object, None, at, Duration::from_secs(86400)).unwrap();
        assert!(url.starts_with("https://examplebucket.s3.amazonaws.com/test.txt?"));
        assert!(
            url.ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{url}"
        );
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(check_url("https://example.com/x.tar.gz", "url").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x", "url").is_ok());
        for bad in ["file:///etc/passwd", "ftp://x/y", "not a url", "http://"] {
            assert!(check_url(bad, "url").is_err(), "{bad}");
        }
    }
}
