//! Thin handlers: parse the request, call a service, render the answer.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::extract::{BaseUrl, Caller, CallerProject, CallerToken, Params};
use super::views;
use crate::domain::UploadTarget;
use crate::domain::{new_id, now};
use crate::service::{self, relation_export, schedule, ImportRequest};
use crate::signing::Action;
use crate::{auth, remote, App, Error, Result};

mod admin;
mod bulk_imports;
mod exports;
mod imports;
mod projects;
mod relations;
mod uploads;

pub use admin::*;
pub use bulk_imports::*;
pub use exports::*;
pub use imports::*;
pub use projects::*;
pub use relations::*;
pub use uploads::*;

type JsonResponse = Result<(StatusCode, Json<Value>)>;

/// Grape's answer for a path no route has (GitLab's `lib/api/api.rb`).
pub async fn not_found() -> Error {
    Error::NoRoute(404, "404 Not Found")
}

pub async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, "application/yaml; charset=utf-8")],
        super::OPENAPI_YAML,
    )
        .into_response()
}

/// Grape's answer for a known path with another method.
pub async fn method_not_allowed() -> Error {
    Error::NoRoute(405, "405 Not Allowed")
}

/// `200` with a JSON body and headers (GitLab's pagination headers).
fn with_headers(body: Value, headers: Vec<(&'static str, String)>) -> Response {
    let mut response = (StatusCode::OK, Json(body)).into_response();
    for (name, value) in headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn accepted() -> JsonResponse {
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": "202 Accepted" })),
    ))
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str> {
    params
        .get(name)?
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::InvalidParameter(format!("{name} is missing")))
}

/// A download: `302` to a signed URL, or the file itself (the part of it
/// `range` asks for), as configured.
async fn deliver(app: &App, download: service::Download, range: Range) -> Result<Response> {
    if app.settings.download_redirect {
        let url = app
            .blobs
            .download_url(
                &download.key,
                &download.file_name,
                app.settings.download_ttl,
            )
            .await?;
        return Ok((StatusCode::FOUND, [(LOCATION, url)]).into_response());
    }
    attachment(app, &download.key, &download.file_name, range).await
}

/// A request's `Range` header, as S3 and GitLab's Workhorse honour it: one
/// byte range is served `206`; several, or one that does not parse, the
/// whole file (RFC 9110 lets a server ignore them).
pub struct Range(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Range {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> std::result::Result<Self, Self::Rejection> {
        let value = parts.headers.get(axum::http::header::RANGE);
        Ok(Range(
            value.and_then(|v| v.to_str().ok()).map(str::to_owned),
        ))
    }
}

/// What a `Range` asks of a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    Part(std::ops::RangeInclusive<u64>),
    Unsatisfiable,
}

impl Range {
    fn of(&self, size: u64) -> Wanted {
        let Some((value, parsed)) = self.0.as_deref().and_then(|value| {
            let parsed = http_range_header::parse_range_header(value).ok()?;
            Some((value, parsed))
        }) else {
            return Wanted::Whole;
        };
        if size == 0 {
            // No byte to send: every range is past the end.
            return Wanted::Unsatisfiable;
        }
        let suffix = value
            .strip_prefix("bytes=-")
            .and_then(|n| n.parse::<u64>().ok());
        if suffix.is_some_and(|n| n >= size) {
            // The last N bytes of a shorter file: all of it (RFC 9110, 14.1.2).
            return Wanted::Part(0..=size - 1);
        }
        match parsed.validate(size) {
            Ok(ranges) if ranges.len() == 1 => Wanted::Part(ranges[0].clone()),
            Ok(_) => Wanted::Whole,
            Err(_) => Wanted::Unsatisfiable,
        }
    }
}

/// A stored blob streamed as a file named `file_name`, or the one range of
/// it asked for.
async fn attachment(app: &App, key: &str, file_name: &str, range: Range) -> Result<Response> {
    // Its size, as GitLab's downloads (and S3's) give it: clients show
    // progress, a remote import's `HEAD` checks it, and ranges need it.
    let listed = app.blobs.list(key).await?;
    let size = listed
        .iter()
        .find(|blob| blob.key == key)
        .map(|blob| blob.size)
        .ok_or_else(|| Error::not_found("File"))?;
    let (status, body, length, content_range) = match range.of(size) {
        Wanted::Whole => (StatusCode::OK, app.blobs.get(key).await?, size, None),
        Wanted::Part(range) => {
            let length = range.end() - range.start() + 1;
            let body = app.blobs.get_range(key, *range.start(), length).await?;
            let content_range = format!("bytes {}-{}/{size}", range.start(), range.end());
            (
                StatusCode::PARTIAL_CONTENT,
                body,
                length,
                Some(content_range),
            )
        }
        Wanted::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response());
        }
    };
    let content_type = if file_name.ends_with(".gz") {
        "application/gzip"
    } else {
        "application/octet-stream"
    };
    let ascii_name: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{}",
        utf8_percent_encode(file_name, NON_ALPHANUMERIC)
    );
    let mut response = (
        status,
        [
            (CONTENT_TYPE, content_type.to_owned()),
            (CONTENT_DISPOSITION, disposition),
            (ACCEPT_RANGES, "bytes".to_owned()),
        ],
        Body::from_stream(body),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_LENGTH, length.into());
    if let Some(content_range) = content_range {
        headers.insert(
            CONTENT_RANGE,
            content_range.parse().map_err(Error::internal)?,
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_asks_what_rfc_9110_says() {
        let of = |value: Option<&str>, size| Range(value.map(str::to_owned)).of(size);
        assert_eq!(of(None, 10), Wanted::Whole);
        assert_eq!(of(Some("bytes=2-"), 10), Wanted::Part(2..=9));
        assert_eq!(of(Some("bytes=2-4"), 10), Wanted::Part(2..=4));
        assert_eq!(of(Some("bytes=-3"), 10), Wanted::Part(7..=9));
        assert_eq!(of(Some("bytes=-30"), 10), Wanted::Part(0..=9));
        assert_eq!(of(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        // An empty file has no byte to send.
        assert_eq!(of(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
        assert_eq!(of(Some("bytes=-5"), 0), Wanted::Unsatisfiable);
        // What a server may ignore: the whole file.
        assert_eq!(of(Some("bytes=0-1,4-5"), 10), Wanted::Whole);
        assert_eq!(of(Some("items=0-3"), 10), Wanted::Whole);
        assert_eq!(of(Some("bytes=x-"), 10), Wanted::Whole);
        assert_eq!(of(Some(""), 0), Wanted::Whole);
    }
}
