//! Blobs on S3: multipart uploads streamed part by part (an object exists
//! only once its upload completed), streaming reads, presigned downloads.

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use shared::ports::{BlobInfo, BlobStore, StoredPart};
use shared::stream::{BlockingReader, BorrowedStream, ByteStream};
use shared::{Error, Result};

/// S3's smallest part (but the last) is 5 MiB; 8 MiB parts keep memory low.
const PART_BYTES: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
}

fn s3_error(err: impl std::error::Error) -> Error {
    Error::Storage(format!("S3: {}", DisplayErrorContext(err)))
}

impl S3BlobStore {
    /// Every page of a listing of `prefix`, folded at `delimiter` if given.
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<Vec<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output>> {
        let mut pages = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_delimiter(delimiter.map(str::to_owned))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(s3_error)?;
            token = page.next_continuation_token().map(str::to_owned);
            pages.push(page);
            if token.is_none() {
                return Ok(pages);
            }
        }
    }

    pub fn new(client: Client, bucket: &str) -> Self {
        S3BlobStore {
            client,
            bucket: bucket.to_owned(),
        }
    }

    pub(crate) async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(S3Body::from(bytes))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    /// Deletes these objects (missing ones are no error).
    pub(crate) async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        // DeleteObjects takes at most 1,000 keys.
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|key| {
                    ObjectIdentifier::builder()
                        .key(key)
                        .build()
                        .map_err(Error::internal)
                })
                .collect::<Result<Vec<_>>>()?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(
                    Delete::builder()
                        .set_objects(Some(objects))
                        .quiet(true)
                        .build()
                        .map_err(Error::internal)?,
                )
                .send()
                .await
                .map_err(s3_error)?;
        }
        Ok(())
    }

    pub(crate) async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        let body = self.get(key).await?;
        Ok(Bytes::from(shared::stream::collect(body).await?))
    }

    /// The object's bytes `range` (a ranged GET unless all of it); an end
    /// past the object's is its end.
    pub(crate) async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<ByteStream> {
        let range = match (range.start, range.end) {
            (0, u64::MAX) => None,
            (start, u64::MAX) => Some(format!("bytes={start}-")),
            (start, end) => Some(format!("bytes={start}-{}", end.max(start + 1) - 1)),
        };
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(|err| match err.into_service_error() {
                e if e.is_no_such_key() => Error::not_found("File"),
                e => s3_error(e),
            })?;
        let body = object.body;
        Ok(Box::pin(
            futures::stream::unfold(body, |mut body| async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), body)),
                    Ok(None) => None,
                    Err(err) => Some((Err(io::Error::other(err)), body)),
                }
            })
            .fuse(),
        ))
    }

    async fn multipart(
        &self,
        key: &str,
        first: Bytes,
        body: &mut BorrowedStream<'_>,
    ) -> Result<u64> {
        let upload = self.start_parts(key).await?;
        match self.upload_parts(key, &upload, first, body).await {
            Ok(parts) => self.complete_parts(key, &upload, &parts).await,
            Err(err) => {
                // Nothing becomes visible; the parts are dropped.
                let _ = self.abort_parts(key, &upload).await;
                Err(err)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload: &str,
        first: Bytes,
        body: &mut BorrowedStream<'_>,
    ) -> Result<Vec<StoredPart>> {
        let mut parts = Vec::new();
        let mut pending = Some(first);
        loop {
            let part = match pending.take() {
                Some(part) => part,
                None => match read_part(body).await? {
                    Some(part) => part,
                    None => return Ok(parts),
                },
            };
            let number = parts.len() as u32 + 1;
            let size = part.len() as u64;
            let stored = self
                .upload_part(key, upload, number, S3Body::from(part), size)
                .await?;
            parts.push(stored);
        }
    }

    /// Part `number` of the upload, `size` bytes.
    async fn upload_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: S3Body,
        size: u64,
    ) -> Result<StoredPart> {
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .part_number(number as i32)
            .content_length(size as i64)
            .body(body)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(StoredPart {
            number,
            size,
            receipt: uploaded.e_tag().unwrap_or_default().to_owned(),
        })
    }
}

/// S3's least size of a part but the last.
const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// A part on its way to S3: written to a local file first, since S3 wants
/// its length before its bytes, and a part may be far larger than the
/// memory a function has. Removed when dropped.
struct SpooledPart {
    path: std::path::PathBuf,
}

impl SpooledPart {
    async fn write(mut body: BorrowedStream<'_>) -> Result<(SpooledPart, u64)> {
        use tokio::io::AsyncWriteExt;
        let spooled = SpooledPart {
            path: std::env::temp_dir().join(format!("part-{}", shared::domain::new_id())),
        };
        let mut file = tokio::fs::File::create(&spooled.path).await?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok((spooled, size))
    }
}

impl Drop for SpooledPart {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Up to one part's worth of the stream; `None` at its end.
async fn read_part(body: &mut BorrowedStream<'_>) -> Result<Option<Bytes>> {
    let mut part = BytesMut::new();
    while part.len() < PART_BYTES {
        match body.next().await {
            Some(chunk) => part.extend_from_slice(&chunk?),
            None => break,
        }
    }
    Ok((!part.is_empty()).then(|| part.freeze()))
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, body: BorrowedStream<'_>) -> Result<u64> {
        // Parts are read until a short one: the stream is polled past its end.
        let mut body: BorrowedStream<'_> = Box::pin(body.fuse());
        let first = read_part(&mut body).await?.unwrap_or_default();
        if first.len() < PART_BYTES {
            // All of it fits one part: a plain PUT.
            let size = first.len() as u64;
            self.put_bytes(key, first).await?;
            return Ok(size);
        }
        self.multipart(key, first, &mut body).await
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        self.get_range(key, 0..u64::MAX).await
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<ByteStream> {
        if length == 0 {
            return Ok(shared::stream::from_bytes(Bytes::new()));
        }
        S3BlobStore::get_range(self, key, offset..offset + length).await
    }

    async fn reader_from(&self, key: &str, offset: u64) -> Result<BlockingReader> {
        let body = self.get_range(key, offset..u64::MAX).await?;
        Ok(Box::new(shared::stream::blocking_reader(body)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        let mut out = Vec::new();
        for page in self.list_pages(prefix, None).await? {
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push(BlobInfo {
                        key: key.to_owned(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        modified: object
                            .last_modified()
                            .and_then(|at| chrono::DateTime::from_timestamp(at.secs(), 0)),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for page in self.list_pages(prefix, Some("/")).await? {
            for common in page.common_prefixes() {
                if let Some(name) = common
                    .prefix()
                    .and_then(|p| p.strip_prefix(prefix))
                    .map(|p| p.trim_end_matches('/'))
                {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let keys: Vec<String> = self
            .list(prefix)
            .await?
            .into_iter()
            .map(|blob| blob.key)
            .collect();
        self.delete_keys(&keys).await
    }

    async fn download_url(&self, key: &str, file_name: &str, ttl: Duration) -> Result<String> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(Error::internal)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_disposition(format!("attachment; filename=\"{file_name}\""))
            .response_content_type("application/gzip")
            .presigned(presigning)
            .await
            .map_err(s3_error)?;
        Ok(request.uri().to_owned())
    }

    async fn upload_url(&self, key: &str, ttl: Duration) -> Result<String> {
        let presigning = PresigningConfig::expires_in(ttl).map_err(Error::internal)?;
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning)
            .await
            .map_err(s3_error)?;
        Ok(request.uri().to_owned())
    }

    async fn start_parts(&self, key: &str) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error)?;
        created
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::Storage("S3 gave no upload id".into()))
    }

    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: BorrowedStream<'_>,
    ) -> Result<StoredPart> {
        let (spooled, size) = SpooledPart::write(body).await?;
        let body = S3Body::read_from()
            .path(&spooled.path)
            .build()
            .await
            .map_err(Error::internal)?;
        self.upload_part(key, upload, number, body, size).await
    }

    async fn complete_parts(&self, key: &str, upload: &str, parts: &[StoredPart]) -> Result<u64> {
        let mut ordered = parts.to_vec();
        ordered.sort_by_key(|part| part.number);
        let completed = ordered
            .iter()
            .map(|part| {
                CompletedPart::builder()
                    .e_tag(&part.receipt)
                    .part_number(part.number as i32)
                    .build()
            })
            .collect();
        let size = ordered.iter().map(|part| part.size).sum();
        let sent = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await;
        match sent {
            Ok(_) => Ok(size),
            Err(err) => {
                // Completed before (a retry after the answer was lost): the
                // object is there, whole.
                let there = self.list(key).await?;
                match there.iter().find(|blob| blob.key == key) {
                    Some(blob) if blob.size == size => Ok(size),
                    _ => Err(s3_error(err)),
                }
            }
        }
    }

    async fn abort_parts(&self, key: &str, upload: &str) -> Result<()> {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload)
            .send()
            .await;
        match aborted {
            Ok(_) => Ok(()),
            Err(err) => match err.into_service_error() {
                e if e.is_no_such_upload() => Ok(()),
                e => Err(s3_error(e)),
            },
        }
    }

    fn min_part_bytes(&self) -> u64 {
        MIN_PART_BYTES
    }
}
