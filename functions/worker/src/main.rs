//! SQS-triggered: export builds and imports, with partial batch failures.

fn main() -> Result<(), shared::lambda::Error> {
    shared::runtime::block_on(shared::lambda::run_worker())
}
