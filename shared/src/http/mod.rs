//! GitLab's REST routes over the services. Built once here; the local server
//! mounts all of them, each Lambda function mounts its own group.

mod error;
mod extract;
mod handlers;
mod views;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

pub use error::error_response;

use crate::App;

const API: &str = "/api/v4";

fn api(path: &str) -> String {
    format!("{API}{path}")
}

/// The routes that queue work: `POST` exports, export schedules and
/// project deletion (the `schedule` function).
pub fn schedule_routes() -> Router<App> {
    Router::new()
        .route(
            &api("/projects/{id}/export"),
            post(handlers::schedule_export),
        )
        .route(
            &api("/projects/{id}/export_relations"),
            post(handlers::schedule_relations_export),
        )
        .route(
            &api("/projects/{id}/export_schedule"),
            put(handlers::put_export_schedule).delete(handlers::delete_export_schedule),
        )
        .route(&api("/projects/{id}"), delete(handlers::delete_project))
}

/// Status routes (the `status` function).
pub fn status_routes() -> Router<App> {
    Router::new()
        .route(&api("/projects/{id}/export"), get(handlers::export_status))
        .route(&api("/projects/{id}/import"), get(handlers::import_status))
        .route(
            &api("/projects/{id}/relation-imports"),
            get(handlers::relation_imports),
        )
        .route(
            &api("/projects/{id}/export_relations/status"),
            get(handlers::relations_export_status),
        )
        .route(
            &api("/projects/{id}/export_schedule"),
            get(handlers::get_export_schedule),
        )
        .route(&api("/user"), get(handlers::current_user))
        .route(&api("/projects"), get(handlers::list_projects))
        .route(&api("/projects/{id}"), get(handlers::get_project))
}

/// Download routes (the `download` function).
pub fn download_routes() -> Router<App> {
    Router::new()
        .route(
            &api("/projects/{id}/export/download"),
            get(handlers::export_download),
        )
        .route(
            &api("/projects/{id}/export_relations/download"),
            get(handlers::relations_export_download),
        )
        .route(
            &api("/projects/{id}/export_schedule/archives/{job_id}/download"),
            get(handlers::scheduled_archive_download),
        )
}

/// Import routes (the `import` function). Uploads stream to the blob store
/// with their own size limit, so axum's default body limit is lifted here.
pub fn import_routes() -> Router<App> {
    Router::new()
        .route(&api("/projects/import"), post(handlers::import_project))
        .route(
            &api("/projects/import-relation"),
            post(handlers::import_relation),
        )
        .route(
            &api("/projects/remote-import"),
            post(handlers::remote_import),
        )
        .route(
            &api("/projects/remote-import-s3"),
            post(handlers::remote_import_s3),
        )
        .route(
            &api("/projects/import/upload-url"),
            post(handlers::authorize_import),
        )
        .route(
            &api("/projects/import/authorize"),
            post(handlers::workhorse_authorize),
        )
        .layer(DefaultBodyLimit::disable())
}

/// Administration: users and their tokens (GitLab's admin API).
pub fn admin_routes() -> Router<App> {
    Router::new()
        .route(&api("/users"), post(handlers::create_user))
        .route(
            &api("/users/{user_id}/personal_access_tokens"),
            post(handlers::create_token),
        )
        .route(
            &api("/personal_access_tokens/self"),
            delete(handlers::revoke_own_token),
        )
        .route(
            &api("/personal_access_tokens/{token_id}"),
            delete(handlers::revoke_token),
        )
}

/// Signed blob downloads, served where there is no S3 to serve them.
pub fn blob_routes() -> Router<App> {
    Router::new().route(
        "/-/blobs/{*key}",
        get(handlers::blob_download).put(handlers::blob_upload),
    )
}

/// The OpenAPI document of every route, served as written.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi.yaml");

/// The API's own description (the `status` function on AWS).
pub fn docs_routes() -> Router<App> {
    Router::new().route(&api("/openapi.yaml"), get(handlers::openapi))
}

/// Every route, for the local server.
pub fn router(app: App) -> Router {
    Router::new()
        .merge(schedule_routes())
        .merge(status_routes())
        .merge(download_routes())
        .merge(import_routes())
        .merge(admin_routes())
        .merge(blob_routes())
        .merge(docs_routes())
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(app)
}

/// One function's routes with the common fallback, for a Lambda.
pub fn function_router(routes: Router<App>, app: App) -> Router {
    routes
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(app)
}
