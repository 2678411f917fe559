//! Thin handlers: parse the request, call a service, render the answer.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
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

/// A download: `302` to a signed URL, or the file itself, as configured.
async fn deliver(app: &App, download: service::Download) -> Result<Response> {
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
    attachment(app, &download.key, &download.file_name).await
}

/// A stored blob streamed as a file named `file_name`.
async fn attachment(app: &App, key: &str, file_name: &str) -> Result<Response> {
    let body = app.blobs.get(key).await?;
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
        StatusCode::OK,
        [
            (CONTENT_TYPE, content_type.to_owned()),
            (CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response();
    // Its size, as GitLab's downloads (and S3's) give it: clients show
    // progress, and a remote import's `HEAD` checks it.
    let listed = app.blobs.list(key).await?;
    if let Some(blob) = listed.iter().find(|blob| blob.key == key) {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, blob.size.into());
    }
    Ok(response)
}
