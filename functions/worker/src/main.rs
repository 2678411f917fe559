//! SQS-triggered: export builds and imports, with partial batch failures.

#[tokio::main]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::lambda::run_worker().await
}
