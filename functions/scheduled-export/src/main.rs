//! EventBridge-triggered: queues the scheduled exports of one tick.

#[tokio::main]
async fn main() -> Result<(), shared::lambda::Error> {
    shared::lambda::run_scheduled_exports().await
}
