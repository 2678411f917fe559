//! `GET /projects/:id/export/download`: a 302 to a presigned S3 URL.

#[tokio::main]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::lambda::run_http(shared::http::download_routes()).await
}
