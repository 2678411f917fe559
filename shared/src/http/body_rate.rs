//! Request bodies that come too slowly: a client keeping a connection open
//! by sending a byte now and then is cut off with `408`, whatever the
//! handler was doing with the body. Only where this server reads bodies off
//! the network itself (the local server): API Gateway receives them whole
//! before a Lambda sees them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{HeaderValue, CONNECTION};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::stream::{min_rate, MinRate};
use crate::Error;

/// `router` with every request body held to `rate`.
pub fn with_min_body_rate(router: Router, rate: MinRate) -> Router {
    router.layer(axum::middleware::from_fn_with_state(rate, enforce))
}

async fn enforce(State(rate): State<MinRate>, request: Request, next: Next) -> Response {
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    let (parts, body) = request.into_parts();
    let body = min_rate(body.into_data_stream(), rate, move || {
        flag.store(true, Ordering::Relaxed)
    });
    let response = next
        .run(Request::from_parts(parts, Body::from_stream(body)))
        .await;
    if !cut.load(Ordering::Relaxed) {
        return response;
    }
    let mut response = Error::RequestTimeout.into_response();
    // What is left of the body is not read: the connection goes with it.
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
