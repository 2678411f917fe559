//! The AWS adapters of the shared crate's ports: DynamoDB for users,
//! projects, jobs and content manifests; S3 for blobs and content records;
//! SQS for work; and (feature `lambda`) the Lambda entry points. A crate of
//! their own so that the local server, which runs without AWS, never
//! compiles the AWS SDK. Each honours `AWS_ENDPOINT_URL` so the same code runs
//! against moto in the tests.

mod content;
mod dynamo;
#[cfg(feature = "lambda")]
pub mod lambda;
mod s3;
mod sqs;

use std::sync::Arc;

pub use content::S3ContentStore;
pub use dynamo::DynamoStore;
pub use s3::S3BlobStore;
pub use sqs::{parse_message, SqsQueue};

/// The table key (`pk`, `sk`) of a project's pointer to its newest finished
/// job of `kind`, written after the job's own item: a run that dies between
/// the two leaves the pointer behind (a test takes it away to play that).
pub fn finished_pointer_key(project_id: u64, kind: shared::domain::JobKind) -> (String, String) {
    (
        dynamo::keys::project(project_id),
        dynamo::keys::job_pointer("FINISHED", kind),
    )
}

use shared::{App, Error, Result, Settings};

/// Where the resources are: what `template.yaml` passes as environment.
#[derive(Debug, Clone)]
pub struct AwsNames {
    pub table: String,
    pub bucket: String,
    pub queue_url: String,
}

impl AwsNames {
    /// `TABLE_NAME`, `BUCKET_NAME`, `QUEUE_URL`.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| Error::Internal(format!("environment variable {name} is not set")))
        };
        Ok(AwsNames {
            table: var("TABLE_NAME")?,
            bucket: var("BUCKET_NAME")?,
            queue_url: var("QUEUE_URL")?,
        })
    }
}

/// The SDK clients, built once per process.
#[derive(Clone)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    /// From an SDK configuration; S3 uses path-style addressing when an
    /// endpoint override is set (emulators have no per-bucket host names).
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let path_style = config.endpoint_url().is_some();
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build();
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            sqs: aws_sdk_sqs::Client::new(config),
            secrets: aws_sdk_secretsmanager::Client::new(config),
        }
    }

    /// From the environment (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env() -> Self {
        Self::new(&config_loader().load().await)
    }
}

/// The SDK's configuration loader with our HTTPS client (rustls on ring, the
/// TLS stack reqwest already links); the SDK has no default client here.
///
/// Throttling (DynamoDB past a partition's throughput, S3 `503 SlowDown`)
/// and dropped connections are retried with backoff up to `SDK_ATTEMPTS`
/// times before a job sees the error and is retried whole: at a 10% fault
/// rate a call then fails once in 100,000 rather than once in 1,000.
pub fn config_loader() -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let retries = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(SDK_ATTEMPTS)
        .with_max_backoff(std::time::Duration::from_secs(5));
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .retry_config(retries)
}

const SDK_ATTEMPTS: u32 = 5;

/// The application on AWS adapters.
pub fn app(clients: &AwsClients, names: &AwsNames, settings: Settings) -> App {
    let table = || {
        DynamoStore::new(
            clients.dynamodb.clone(),
            &names.table,
            settings.export_retention,
        )
    };
    let blobs = S3BlobStore::new(clients.s3.clone(), &names.bucket);
    let store = Arc::new(table());
    App {
        users: store.clone(),
        projects: store.clone(),
        content: Arc::new(S3ContentStore::new(table(), blobs.clone())),
        jobs: store,
        blobs: Arc::new(blobs),
        queue: Arc::new(SqsQueue::new(clients.sqs.clone(), &names.queue_url)),
        signer: None,
        settings: Arc::new(settings),
        metrics: Default::default(),
    }
}

/// Creates the table, bucket and queue (for emulators and tests; on AWS,
/// `template.yaml` creates them). Returns the queue URL.
pub async fn provision(
    clients: &AwsClients,
    table: &str,
    bucket: &str,
    queue: &str,
) -> Result<String> {
    dynamo::create_table(&clients.dynamodb, table).await?;
    clients
        .s3
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| Error::storage(aws_sdk_s3::error::DisplayErrorContext(e)))?;
    let created = clients
        .sqs
        .create_queue()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| Error::storage(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    created
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| Error::Storage("no queue URL".into()))
}
