//! `GET /projects/:id/export`, `GET /projects/:id/import`, `GET /user` and the
//! admin routes for users and tokens.

fn main() -> Result<(), shared::lambda::Error> {
    shared::runtime::block_on(shared::lambda::run_http(
        shared::http::Function::Status.routes(),
    ))
}
