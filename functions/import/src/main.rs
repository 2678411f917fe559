//! `POST /projects/import`.

fn main() -> Result<(), shared::lambda::Error> {
    shared::runtime::block_on(shared::lambda::run_http(
        shared::http::Function::Import.routes(),
    ))
}
