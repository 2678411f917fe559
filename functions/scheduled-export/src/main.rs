//! EventBridge-triggered: queues the scheduled exports of one tick.

fn main() -> Result<(), shared::lambda::Error> {
    shared::runtime::block_on(shared::lambda::run_scheduled_exports())
}
