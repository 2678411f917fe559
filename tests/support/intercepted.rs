//! A blob store that lets a test act at one step of a worker: every call
//! goes to the real store, but first to `before`, which may run something
//! meanwhile (another worker) or fail the call as a network would.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use shared::ports::{BlobInfo, BlobStore, StoredPart};
use shared::stream::{BlockingReader, BorrowedStream, ByteStream};

/// The calls a test may act before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Put { key: String },
    ReaderFrom { key: String, offset: u64 },
    List { prefix: String },
}

type Before = dyn Fn(&Call) -> BoxFuture<'static, shared::Result<()>> + Send + Sync;

pub struct Intercepted {
    inner: Arc<dyn BlobStore>,
    before: Box<Before>,
}

impl Intercepted {
    pub fn new(
        inner: Arc<dyn BlobStore>,
        before: impl Fn(&Call) -> BoxFuture<'static, shared::Result<()>> + Send + Sync + 'static,
    ) -> Self {
        Intercepted {
            inner,
            before: Box::new(before),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for Intercepted {
    async fn put(&self, key: &str, body: BorrowedStream<'_>) -> shared::Result<u64> {
        (self.before)(&Call::Put { key: key.into() }).await?;
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> shared::Result<ByteStream> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> shared::Result<ByteStream> {
        self.inner.get_range(key, offset, length).await
    }
    async fn reader_from(&self, key: &str, offset: u64) -> shared::Result<BlockingReader> {
        let call = Call::ReaderFrom {
            key: key.into(),
            offset,
        };
        (self.before)(&call).await?;
        self.inner.reader_from(key, offset).await
    }
    async fn list(&self, prefix: &str) -> shared::Result<Vec<BlobInfo>> {
        (self.before)(&Call::List {
            prefix: prefix.into(),
        })
        .await?;
        self.inner.list(prefix).await
    }
    async fn folders(&self, prefix: &str) -> shared::Result<Vec<String>> {
        self.inner.folders(prefix).await
    }
    async fn delete_prefix(&self, prefix: &str) -> shared::Result<()> {
        self.inner.delete_prefix(prefix).await
    }
    async fn download_url(&self, key: &str, name: &str, ttl: Duration) -> shared::Result<String> {
        self.inner.download_url(key, name, ttl).await
    }
    async fn upload_url(&self, key: &str, ttl: Duration) -> shared::Result<String> {
        self.inner.upload_url(key, ttl).await
    }
    async fn start_parts(&self, key: &str) -> shared::Result<String> {
        self.inner.start_parts(key).await
    }
    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: BorrowedStream<'_>,
    ) -> shared::Result<StoredPart> {
        self.inner.put_part(key, upload, number, body).await
    }
    async fn complete_parts(
        &self,
        key: &str,
        upload: &str,
        parts: &[StoredPart],
    ) -> shared::Result<u64> {
        self.inner.complete_parts(key, upload, parts).await
    }
    async fn abort_parts(&self, key: &str, upload: &str) -> shared::Result<()> {
        self.inner.abort_parts(key, upload).await
    }
    fn min_part_bytes(&self) -> u64 {
        self.inner.min_part_bytes()
    }
}
