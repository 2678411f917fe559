//! The one place where errors become HTTP statuses and JSON bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::Error;

pub fn error_response(err: &Error) -> Response {
    let status = match err {
        Error::Unauthorized => StatusCode::UNAUTHORIZED,
        Error::Forbidden => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::BadRequest(_) | Error::Archive(_) | Error::InvalidParameter(_) => {
            StatusCode::BAD_REQUEST
        }
        Error::NoRoute(status, _) => StatusCode::from_u16(*status).unwrap_or(StatusCode::NOT_FOUND),
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::Storage(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    // A full disk is said as it is: the client can do something about it
    // (wait, or send less); other server errors say nothing of the inside.
    let message = if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
        tracing::error!(error = %err, "request failed");
        "500 Internal Server Error".to_owned()
    } else {
        err.to_string()
    };
    // Grape's own errors are `{"error": …}`; GitLab's `render_api_error!`
    // is `{"message": …}`, and its rate limit nests `{"error": …}` in it.
    let body = match err {
        Error::InvalidParameter(_) | Error::NoRoute(..) => json!({ "error": message }),
        Error::TooManyRequests { .. } => json!({ "message": { "error": message } }),
        _ => json!({ "message": message }),
    };
    let mut response = (status, Json(body)).into_response();
    if let Error::TooManyRequests { retry_after } = err {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, (*retry_after).into());
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}
