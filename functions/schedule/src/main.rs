//! `POST /projects/:id/export`.

#[tokio::main]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::lambda::run_http(shared::http::schedule_routes()).await
}
