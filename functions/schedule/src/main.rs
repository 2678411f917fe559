//! `POST /projects/:id/export`.

fn main() -> Result<(), shared_aws::lambda::Error> {
    shared::runtime::block_on(shared_aws::lambda::run_http(
        shared::http::Function::Schedule.routes(),
    ))
}
