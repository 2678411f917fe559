//! EventBridge-triggered: queues the scheduled exports of one tick.

fn main() -> Result<(), shared_aws::lambda::Error> {
    shared::runtime::block_on(shared_aws::lambda::run_scheduled_exports())
}
