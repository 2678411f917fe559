//! `GET /projects/:id/export`, `GET /projects/:id/import`, `GET /user` and the
//! admin routes for users and tokens.

#[tokio::main]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::lambda::run_http(
        shared::http::status_routes()
            .merge(shared::http::admin_routes())
            .merge(shared::http::docs_routes()),
    )
    .await
}
