//! SQS-triggered: export builds and imports, with partial batch failures.

fn main() -> Result<(), shared_aws::lambda::Error> {
    shared::runtime::block_on(shared_aws::lambda::run_worker())
}
