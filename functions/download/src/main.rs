//! `GET /projects/:id/export/download`: a 302 to a presigned S3 URL.

fn main() -> Result<(), shared::lambda::Error> {
    shared::runtime::block_on(shared::lambda::run_http(
        shared::http::Function::Download.routes(),
    ))
}
