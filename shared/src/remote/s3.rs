//! `POST /projects/remote-import-s3`: the user's S3 object, read through a
//! URL presigned with the user's credentials by the AWS SDK's own SigV4
//! signer, so the worker fetches it like any remote URL and the secret key
//! is never stored.

use std::time::Duration;

use crate::uri::{encode_component, encode_path};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use chrono::{DateTime, Utc};

use super::{check_archive_headers, check_url, client, error_chain, HEAD_TIMEOUT};
use crate::{redact, Error, Result};

/// An S3 object to import from (`POST /projects/remote-import-s3`).
#[derive(Debug, Clone)]
pub struct S3Object {
    pub region: String,
    pub bucket: String,
    pub key: String,
    pub access_key_id: String,
    pub secret_access_key: String,
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
    presign_s3("GET", object, endpoint, at, expires_in)
}

/// `remote-import-s3` checks the object before anything is created, as
/// GitLab's `RemoteFileS3` strategy does: it must exist (`File not found
/// '<key>' in '<bucket>'`), open (`Failed to open '<key>' in '<bucket>':
/// …`), and pass the same size and content type checks as a remote URL.
pub async fn check_s3_object(
    object: &S3Object,
    endpoint: Option<&str>,
    limit: u64,
    allow_local: bool,
) -> Result<()> {
    let url = presign_s3(
        "HEAD",
        object,
        endpoint,
        Utc::now(),
        Duration::from_secs(60),
    )?;
    let (key, bucket) = (&object.key, &object.bucket);
    let failed = |detail: String| {
        Error::BadRequest(format!(
            "Failed to open '{key}' in '{bucket}': {}",
            redact::text(&detail)
        ))
    };
    // The endpoint is AWS's, or the operator's own emulator.
    let client = client(allow_local || endpoint.is_some())?;
    let response = client
        .head(url)
        .timeout(HEAD_TIMEOUT)
        .send()
        .await
        .map_err(|err| failed(error_chain(&err)))?;
    match response.status() {
        status if status.is_success() => check_archive_headers(response.headers(), limit),
        reqwest::StatusCode::NOT_FOUND => Err(Error::BadRequest(format!(
            "File not found '{key}' in '{bucket}'"
        ))),
        status => Err(failed(status.to_string())),
    }
}

/// A presigned URL for `method` on the object.
fn presign_s3(
    method: &str,
    object: &S3Object,
    endpoint: Option<&str>,
    at: DateTime<Utc>,
    expires_in: Duration,
) -> Result<String> {
    // Both become part of the host name: S3's own rules, nothing else.
    let bucket_ok = (3..=63).contains(&object.bucket.len())
        && object
            .bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && object
            .bucket
            .starts_with(|c: char| c.is_ascii_alphanumeric())
        && object.bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(Error::InvalidParameter("bucket_name is invalid".into()));
    }
    let region_ok = (1..=32).contains(&object.region.len())
        && object
            .region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        return Err(Error::InvalidParameter("region is invalid".into()));
    }
    let (base, host, path) = match endpoint {
        Some(endpoint) => {
            // The operator's own setting (an emulator), not a user's URL.
            let url = check_url(endpoint, "endpoint", true)?;
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
    let url = format!("{base}{}", encode_path(&path));
    let identity = Credentials::new(
        &object.access_key_id,
        &object.secret_access_key,
        None,
        None,
        "remote-import-s3",
    )
    .into();
    // S3's flavour of SigV4: the path as it is (encoded once, never
    // normalized) and an unsigned payload, the signature in the query.
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires_in);
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let signing_failed = |err: &dyn std::fmt::Display| Error::Internal(format!("SigV4: {err}"));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&object.region)
        .name("s3")
        .time(at.into())
        .settings(settings)
        .build()
        .map_err(|err| signing_failed(&err))?
        .into();
    let request = SignableRequest::new(
        method,
        &url,
        std::iter::once(("host", host.as_str())),
        SignableBody::UnsignedPayload,
    )
    .map_err(|err| signing_failed(&err))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|err| signing_failed(&err))?
        .into_parts();
    let query = instructions
        .params()
        .iter()
        .map(|(name, value)| format!("{}={}", encode_component(name), encode_component(value)))
        .collect::<Vec<_>>()
        .join("&");
    Ok(format!("{url}?{query}"))
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
    fn s3_names_cannot_steer_the_host() {
        let object = |bucket: &str, region: &str| S3Object {
            region: region.into(),
            bucket: bucket.into(),
            key: "x.tar.gz".into(),
            access_key_id: "AKIA".into(),
            secret_access_key: "secret".into(),
        };
        let presign = |o: &S3Object| presign_s3_get(o, None, Utc::now(), Duration::from_secs(60));
        assert!(presign(&object("my-bucket.v2", "eu-west-1")).is_ok());
        for (bucket, region) in [
            ("10.0.0.5/", "us-east-1"),
            ("evil.com#", "us-east-1"),
            ("Bucket", "us-east-1"),
            ("ab", "us-east-1"),
            ("-bucket", "us-east-1"),
            ("bucket", "x.evil.com/"),
            ("bucket", ""),
        ] {
            assert!(
                matches!(
                    presign(&object(bucket, region)),
                    Err(Error::InvalidParameter(_))
                ),
                "{bucket} {region}"
            );
        }
    }
}
