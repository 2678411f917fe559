//! GitLab's REST routes over the services. Built once here; the local server
//! mounts all of them, each Lambda function mounts its own group.

mod body_rate;
mod console;
mod error;
mod extract;
mod graphql;
mod handlers;
mod views;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

pub use body_rate::with_min_body_rate;
pub use console::{console_routes, CONSOLE_PATHS, CONTENT_SECURITY_POLICY_VALUE};
pub use error::error_response;
pub use graphql::GRAPHQL_PATH;

use crate::App;

const API: &str = "/api/v4";

/// The stack's HTTP functions. Each serves one group of GitLab's routes;
/// the local server serves them all. This table is the one place that says
/// which: the functions' `main`s, the moto tests, and the test that holds
/// `template.yaml`'s events and `openapi.yaml` to it read it from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `POST`s that queue work: exports, export schedules, deletion.
    Schedule,
    /// Statuses, projects, the current user, the admin API, the document,
    /// the console.
    Status,
    /// Archive and relation downloads.
    Download,
    /// Imports: uploads, remote and S3 imports, relation imports.
    Import,
}

/// One route: its method, its path under `/api/v4`, and the function that
/// serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub function: Function,
    pub method: Method,
    pub path: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// Every route of the API, with its handler.
fn table() -> Vec<(Route, MethodRouter<App>)> {
    use Function::*;
    use Method::*;
    let route = |function, method, path, handler| {
        (
            Route {
                function,
                method,
                path,
            },
            handler,
        )
    };
    vec![
        route(
            Schedule,
            Post,
            "/projects/{id}/export",
            post(handlers::schedule_export),
        ),
        route(
            Schedule,
            Post,
            "/projects/{id}/export_relations",
            post(handlers::schedule_relations_export),
        ),
        route(
            Schedule,
            Put,
            "/projects/{id}/export_schedule",
            put(handlers::put_export_schedule),
        ),
        route(
            Schedule,
            Delete,
            "/projects/{id}/export_schedule",
            delete(handlers::delete_export_schedule),
        ),
        route(
            Schedule,
            Delete,
            "/projects/{id}",
            delete(handlers::delete_project),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/export",
            get(handlers::export_status),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/import",
            get(handlers::import_status),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/relation-imports",
            get(handlers::relation_imports),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/export_relations/status",
            get(handlers::relations_export_status),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/export_schedule",
            get(handlers::get_export_schedule),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/members",
            get(handlers::list_members),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/members/all",
            get(handlers::list_members),
        ),
        route(
            Status,
            Get,
            "/projects/{id}/badges",
            get(handlers::list_badges),
        ),
        route(Status, Get, "/user", get(handlers::current_user)),
        route(Status, Get, "/projects", get(handlers::list_projects)),
        route(Status, Get, "/projects/{id}", get(handlers::get_project)),
        route(Status, Post, "/users", post(handlers::create_user)),
        route(
            Status,
            Post,
            "/users/{user_id}/personal_access_tokens",
            post(handlers::create_token),
        ),
        route(
            Status,
            Get,
            "/personal_access_tokens/self",
            get(handlers::own_token),
        ),
        route(
            Status,
            Delete,
            "/personal_access_tokens/self",
            delete(handlers::revoke_own_token),
        ),
        route(Status, Get, "/version", get(handlers::version)),
        route(Status, Get, "/metadata", get(handlers::version)),
        route(
            Status,
            Delete,
            "/personal_access_tokens/{token_id}",
            delete(handlers::revoke_token),
        ),
        route(
            Schedule,
            Post,
            "/bulk_imports",
            post(handlers::create_bulk_import),
        ),
        route(
            Schedule,
            Post,
            "/bulk_imports/{import_id}/cancel",
            post(handlers::cancel_bulk_import),
        ),
        route(
            Status,
            Get,
            "/bulk_imports",
            get(handlers::list_bulk_imports),
        ),
        route(
            Status,
            Get,
            "/bulk_imports/entities",
            get(handlers::list_all_bulk_entities),
        ),
        route(
            Status,
            Get,
            "/bulk_imports/{import_id}",
            get(handlers::get_bulk_import),
        ),
        route(
            Status,
            Get,
            "/bulk_imports/{import_id}/entities",
            get(handlers::list_bulk_entities),
        ),
        route(
            Status,
            Get,
            "/bulk_imports/{import_id}/entities/{entity_id}",
            get(handlers::get_bulk_entity),
        ),
        route(
            Status,
            Get,
            "/bulk_imports/{import_id}/entities/{entity_id}/failures",
            get(handlers::bulk_entity_failures),
        ),
        route(Status, Get, "/openapi.yaml", get(handlers::openapi)),
        route(
            Download,
            Get,
            "/projects/{id}/export/download",
            get(handlers::export_download),
        ),
        route(
            Download,
            Get,
            "/projects/{id}/export_relations/download",
            get(handlers::relations_export_download),
        ),
        route(
            Download,
            Get,
            "/projects/{id}/export_schedule/archives/{job_id}/download",
            get(handlers::scheduled_archive_download),
        ),
        route(
            Import,
            Post,
            "/projects/import",
            post(handlers::import_project),
        ),
        route(
            Import,
            Post,
            "/projects/import-relation",
            post(handlers::import_relation),
        ),
        route(
            Import,
            Post,
            "/projects/remote-import",
            post(handlers::remote_import),
        ),
        route(
            Import,
            Post,
            "/projects/remote-import-s3",
            post(handlers::remote_import_s3),
        ),
        route(
            Import,
            Post,
            "/projects/import/upload-url",
            post(handlers::authorize_import),
        ),
        route(
            Import,
            Post,
            "/projects/import/authorize",
            post(handlers::workhorse_authorize),
        ),
    ]
}

/// Every route of the API (without handlers).
pub fn routes() -> Vec<Route> {
    table().into_iter().map(|(route, _)| route).collect()
}

impl Function {
    pub const ALL: [Function; 4] = [
        Function::Schedule,
        Function::Status,
        Function::Download,
        Function::Import,
    ];

    /// Its resource in `template.yaml`.
    pub fn resource(self) -> &'static str {
        match self {
            Function::Schedule => "ScheduleFunction",
            Function::Status => "StatusFunction",
            Function::Download => "DownloadFunction",
            Function::Import => "ImportFunction",
        }
    }

    /// The routes it serves. Uploads stream to the blob store with their
    /// own size limit, so axum's default body limit is lifted for imports.
    pub fn routes(self) -> Router<App> {
        let router = table()
            .into_iter()
            .filter(|(route, _)| route.function == self)
            .fold(Router::new(), |router, (route, handler)| {
                router.route(&format!("{API}{}", route.path), handler)
            });
        match self {
            Function::Import => router.layer(DefaultBodyLimit::disable()),
            // The console's few static files: the function that answers
            // the statuses it shows.
            Function::Status => router
                .merge(console::console_routes())
                .route(GRAPHQL_PATH, post(graphql::graphql)),
            _ => router,
        }
    }
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

/// Every route, for the local server.
pub fn router(app: App) -> Router {
    Function::ALL
        .into_iter()
        .fold(Router::new(), |router, function| {
            router.merge(function.routes())
        })
        .merge(blob_routes())
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
