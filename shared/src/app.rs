//! The application: the ports it runs on and its settings. Built once per
//! process (Lambda cold start or local server start) and cloned into handlers.

use std::sync::Arc;
use std::time::Duration;

use crate::archive::Limits;
use crate::ports::{BlobStore, ContentStore, JobStore, ProjectStore, Queue, UserStore};
use crate::signing::Signer;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Lifetime of signed/presigned download URLs.
    pub download_ttl: Duration,
    /// Downloads answer `302` to a signed URL (S3 presigned on AWS, where a
    /// Lambda cannot stream an archive) instead of streaming the file (as
    /// GitLab does with local storage).
    pub download_redirect: bool,
    /// Largest accepted import upload, in bytes.
    pub max_upload_bytes: u64,
    /// How long a finished export stays available (the bucket's lifecycle
    /// rule; job rows on DynamoDB expire with it).
    pub export_retention: Duration,
    pub limits: Limits,
    /// gzip level of export archives.
    pub compression_level: u32,
    /// Records read from the store together during an export.
    pub export_page_records: usize,
    /// Bytes of tar stream one worker compresses of a big export: an
    /// archive past 1.5 times this is written in slices, each by a worker
    /// of its own (a Lambda invocation on AWS), as parts of one upload.
    pub export_slice_bytes: u64,
    /// Records per batch of a batched relations export (GitLab: 1,000).
    pub relation_batch_records: u64,
    /// Messages of one relations export on the queue at a time; each part
    /// that ends queues the next. Bounds how far other projects' work can
    /// fall behind one export.
    pub relation_export_window: usize,
    /// The S3 endpoint when it is not AWS's (an emulator): where
    /// `remote-import-s3` fetches from, path-style.
    pub s3_endpoint: Option<String>,
    /// Full exports a user may schedule per minute (GitLab: 6; relations
    /// exports are not limited); 0 turns the limit off.
    pub export_rate_limit: u32,
    /// Full export downloads a user may start per minute in one namespace
    /// (GitLab's `project_download_export`: 1); 0 turns the limit off.
    pub download_rate_limit: u32,
    /// Remote imports and exports sent to a URL may reach this machine and
    /// private networks (GitLab's "allow requests to the local network").
    /// Off by default: a user's URL must not reach internal services or
    /// the cloud metadata endpoint.
    pub allow_local_requests: bool,
    /// How long a worker owns a job without renewing its claim: a run that
    /// died is taken over after at most this long. Renewed every third.
    pub job_lease: Duration,
    /// Links are built from `X-Forwarded-Host`/`-Proto`: only behind a
    /// proxy that sets them (API Gateway; locally `--trust-forwarded-headers`).
    pub trust_forwarded_headers: bool,
    /// How long one worker invocation works on an import before it stops at
    /// a safe point and continues in a fresh message (besides a Lambda's own
    /// deadline, which always counts). `None`: no limit of its own.
    pub invocation_budget: Option<Duration>,
    /// How long a remote (a migration's source, a remote import's URL, an
    /// export's upload target) may take.
    pub remote: crate::remote::bounded::RemoteLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            download_ttl: Duration::from_secs(300),
            download_redirect: true,
            max_upload_bytes: 5 * 1024 * 1024 * 1024,
            export_retention: Duration::from_secs(7 * 24 * 3600),
            limits: Limits::default(),
            compression_level: 6,
            export_page_records: 256,
            export_slice_bytes: 256 * 1024 * 1024,
            relation_batch_records: 1000,
            relation_export_window: 16,
            export_rate_limit: 6,
            download_rate_limit: 1,
            s3_endpoint: None,
            allow_local_requests: false,
            job_lease: Duration::from_secs(60),
            trust_forwarded_headers: false,
            invocation_budget: None,
            remote: Default::default(),
        }
    }
}

impl Settings {
    /// `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`: the S3 endpoint the
    /// AWS SDK would use too.
    pub fn s3_endpoint_from_env() -> Option<String> {
        ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }
}

#[derive(Clone)]
pub struct App {
    pub users: Arc<dyn UserStore>,
    pub projects: Arc<dyn ProjectStore>,
    pub content: Arc<dyn ContentStore>,
    pub jobs: Arc<dyn JobStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub queue: Arc<dyn Queue>,
    /// Verifies the embedded blob store's signed URLs; `None` where blobs are
    /// served by S3 presigned URLs instead.
    pub signer: Option<Signer>,
    pub settings: Arc<Settings>,
    /// Where job metrics go (EMF lines: the log on Lambda and locally).
    pub metrics: crate::metrics::Metrics,
}
