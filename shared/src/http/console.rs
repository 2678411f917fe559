//! The console: a few static files, compiled into the binary, served at `/`
//! and `/-/console/<file>`. They call the same `/api/v4` routes as any
//! client, so every check stays the API's; nothing here reads a token.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::App;

/// The console's paths, as API Gateway's events name them.
pub const CONSOLE_PATHS: [&str; 2] = ["/", "/-/console/{proxy+}"];

/// Scripts and styles from this origin only, nothing inline, no frames, no
/// plugins. `connect-src` also allows S3: on AWS a download redirects to a
/// presigned S3 URL, and an upload goes to one.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; \
     connect-src 'self' https://*.amazonaws.com; img-src 'self' data:; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("console.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("projects.js", JS),
    asset!("imports.js", JS),
    asset!("migrations.js", JS),
    asset!("icon.svg", "image/svg+xml"),
];

/// `/` and `/-/console/<file>`.
pub fn console_routes() -> Router<App> {
    Router::new()
        .route("/", get(index))
        .route("/-/console/{file}", get(asset))
}

async fn index() -> Response {
    serve("index.html")
}

async fn asset(Path(file): Path<String>) -> Response {
    serve(&file)
}

fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return with_security_headers(
            (
                StatusCode::NOT_FOUND,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                "404 Not Found",
            )
                .into_response(),
        );
    };
    with_security_headers(
        (
            [
                (CONTENT_TYPE, asset.content_type),
                // Small files: checked again each time, so a new version is
                // seen at once.
                (CACHE_CONTROL, "no-cache"),
            ],
            asset.body,
        )
            .into_response(),
    )
}

fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
        (X_FRAME_OPTIONS, "DENY"),
        (REFERRER_POLICY, "no-referrer"),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_console_imports_is_served() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let module = line.rsplit_once("\"./").unwrap().1.trim_end_matches("\";");
                assert!(
                    ASSETS.iter().any(|a| a.name == module),
                    "{} imports {module}, which is not served",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn nothing_inline_runs() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!page.contains("<script>"), "an inline script");
        assert!(!page.contains("style=") && !page.contains("<style"));
        let handler = page
            .split(|c: char| c.is_whitespace())
            .find(|word| word.starts_with("on") && word.contains('='));
        assert_eq!(handler, None, "an inline event handler");
    }
}
