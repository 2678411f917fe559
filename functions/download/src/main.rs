//! `GET /projects/:id/export/download`: a 302 to a presigned S3 URL.

fn main() -> Result<(), shared_aws::lambda::Error> {
    shared::runtime::block_on(shared_aws::lambda::run_http(
        shared::http::Function::Download.routes(),
    ))
}
