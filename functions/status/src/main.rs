//! `GET /projects/:id/export`, `GET /projects/:id/import`, `GET /user` and the
//! admin routes for users and tokens.

fn main() -> Result<(), shared_aws::lambda::Error> {
    shared::runtime::block_on(shared_aws::lambda::run_http(
        shared::http::Function::Status.routes(),
    ))
}
