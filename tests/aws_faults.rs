//! AWS under load and over a bad network: the workers reach moto through a
//! proxy (`bench/aws_proxy.py`) that answers a share of their calls with
//! DynamoDB's `ProvisionedThroughputExceededException` and
//! `ThrottlingException`, S3's `503 SlowDown`, SQS throttling, or a dropped
//! connection. Every job still finishes, with every record once, and what
//! it wrote is byte for byte what a fault-free run writes.
//!
//! The API calls that start the jobs go to moto directly: the jobs are what
//! is tested here, and the same resources serve both.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::moto::{self, FaultyProxy};
use e2e::{read_archive, synthetic_archive, ArchiveContent};
use shared::domain::{JobStatus, User};
use shared::service::{self, ImportRequest};
use shared::worker::{self, Outcome};
use shared::{stream, App};
use shared_aws as aws;

const ISSUES: usize = 3_000;

/// One run's apps: `clean` talks to moto, `faulty` through the proxy.
struct Run {
    clean: App,
    faulty: App,
    proxy: Option<FaultyProxy>,
}

impl Run {
    async fn new(fault_rate: f64) -> Self {
        let (clean, _, names) = moto::app().await;
        let proxy = (fault_rate > 0.0).then(|| FaultyProxy::start(fault_rate, 7));
        let faulty = match &proxy {
            Some(proxy) => {
                let clients = moto::clients_at(&proxy.endpoint).await;
                aws::app(&clients, &names, (*clean.settings).clone())
            }
            None => clean.clone(),
        };
        Run {
            clean,
            faulty,
            proxy,
        }
    }

    /// Works the queue on the faulty side until the job is done; a message
    /// whose attempt or acknowledgement failed comes back a second later.
    async fn work_until_done(&self, job_id: &str) -> JobStatus {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let job = self.clean.jobs.job(job_id).await.unwrap().unwrap();
            if job.status.is_done() {
                return job.status;
            }
            assert!(Instant::now() < deadline, "not done: {job:?}");
            let deliveries = match self.faulty.queue.receive(10, Duration::from_secs(1)).await {
                Ok(deliveries) => deliveries,
                Err(_) => continue,
            };
            for delivery in deliveries {
                let outcome =
                    worker::attempt(&self.faulty, &delivery.message, delivery.receive_count).await;
                if outcome == Outcome::Done {
                    let _ = self.faulty.queue.ack(&delivery.receipt).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn put_upload(&self, archive: Vec<u8>) -> String {
        let key = service::upload_key(&shared::domain::new_id());
        self.clean
            .blobs
            .put(&key, stream::from_bytes(archive))
            .await
            .unwrap();
        key
    }

    async fn blob(&self, key: &str) -> Vec<u8> {
        stream::collect(self.clean.blobs.get(key).await.unwrap())
            .await
            .unwrap()
    }

    /// Import, full export, batched relations export, relation import of
    /// more issues, and the export after it: what each wrote.
    async fn every_job(&self) -> Written {
        let written = self.jobs().await;
        if let Some(proxy) = &self.proxy {
            // Every kind of fault, many times over: the run above met them.
            let faults = proxy.faults().await;
            for kind in [
                "dynamodb.ProvisionedThroughputExceededException",
                "dynamodb.ThrottlingException",
                "dynamodb.drop",
                "s3.SlowDown",
                "s3.drop",
                "sqs.ThrottlingException",
            ] {
                assert!(
                    faults.get(kind).copied().unwrap_or(0) >= 2,
                    "{kind}: {faults:?}"
                );
            }
        }
        written
    }

    async fn jobs(&self) -> Written {
        let clean = &self.clean;
        let user: User = clean.users.create_user("root", "Root", true).await.unwrap();
        let key = self.put_upload(synthetic_archive(ISSUES)).await;
        let request = ImportRequest {
            path: "faults".into(),
            namespace: None,
            name: None,
            overwrite: false,
            overrides: Vec::new(),
        };
        let (project, import) = service::start_import(clean, &user, &request, &key)
            .await
            .unwrap();
        assert_eq!(self.work_until_done(&import.id).await, JobStatus::Finished);

        let export = service::schedule_export(clean, &user, &project, None, None)
            .await
            .unwrap();
        assert_eq!(self.work_until_done(&export.id).await, JobStatus::Finished);
        let first_export = self.exported(project.id).await;

        let project = clean.projects.project(project.id).await.unwrap().unwrap();
        service::relation_export::start_run(clean, &project, true)
            .await
            .unwrap();
        let run_id = clean.jobs.relation_export_parts(project.id).await.unwrap()[0]
            .run_id
            .clone();
        assert_eq!(self.work_until_done(&run_id).await, JobStatus::Finished);
        let run_prefix = format!("exports/{}/relations/{run_id}/", project.id);
        let mut relation_files = BTreeMap::new();
        for blob in clean.blobs.list(&run_prefix).await.unwrap() {
            let name = blob.key[run_prefix.len()..].to_owned();
            let content = file_content(&name, &self.blob(&blob.key).await);
            relation_files.insert(name, content);
        }
        assert!(relation_files.len() > 3, "{relation_files:?}");

        let key = self.put_upload(synthetic_archive(ISSUES + 25)).await;
        let path = format!("{}/faults", user.username);
        let (_, relation_import) =
            service::start_relation_import(clean, &user, &path, "issues", &key)
                .await
                .unwrap();
        assert_eq!(
            self.work_until_done(&relation_import.id).await,
            JobStatus::Finished
        );
        let export = service::schedule_export(clean, &user, &project, None, None)
            .await
            .unwrap();
        assert_eq!(self.work_until_done(&export.id).await, JobStatus::Finished);
        let second_export = self.exported(project.id).await;
        Written {
            first_export,
            relation_files,
            second_export,
        }
    }

    async fn exported(&self, project_id: u64) -> ArchiveContent {
        let project = self
            .clean
            .projects
            .project(project_id)
            .await
            .unwrap()
            .unwrap();
        let download = service::export_download(&self.clean, &project)
            .await
            .unwrap();
        read_archive(&self.blob(&download.key).await)
    }
}

/// A relations export file's content: its bytes, or a tar's entries (their
/// headers carry the run's time).
fn file_content(name: &str, gzipped: &[u8]) -> Vec<u8> {
    let bytes = e2e::gunzip(gzipped);
    if !name.ends_with(".tar.gz") {
        return bytes;
    }
    let mut entries = Vec::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        entries.extend_from_slice(entry.path_bytes().as_ref());
        std::io::Read::read_to_end(&mut entry, &mut entries).unwrap();
    }
    entries
}

#[derive(Debug, PartialEq)]
struct Written {
    first_export: ArchiveContent,
    relation_files: BTreeMap<String, Vec<u8>>,
    second_export: ArchiveContent,
}

fn iids(content: &ArchiveContent) -> Vec<u64> {
    content.relations["issues"]
        .iter()
        .map(|issue| issue["iid"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_finishes_through_throttling_and_dropped_connections() {
    let fault_free = Run::new(0.0).await.every_job().await;
    let faulty = Run::new(0.2).await.every_job().await;

    // Every record once.
    let first = iids(&faulty.first_export);
    assert_eq!(first, (1..=ISSUES as u64).collect::<Vec<_>>());
    let second = iids(&faulty.second_export);
    assert_eq!(second, (1..=(ISSUES + 25) as u64).collect::<Vec<_>>());
    let batched_issues: usize = faulty
        .relation_files
        .iter()
        .filter(|(name, _)| name.starts_with("issues/"))
        .map(|(_, bytes)| e2e::ndjson(bytes).len())
        .sum();
    assert_eq!(batched_issues, ISSUES);

    // And byte for byte what the fault-free run wrote.
    assert_eq!(faulty.first_export, fault_free.first_export);
    assert_eq!(faulty.relation_files, fault_free.relation_files);
    assert_eq!(faulty.second_export, fault_free.second_export);
}

/// A run that finished its export and died before the project's pointer to
/// its newest finished export was written (or a client that polls between
/// the two writes, as python-gitlab does before it downloads): the export
/// shows `finished` with its links, and downloads, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_downloads_as_soon_as_it_shows_finished() {
    let (app, clients, names) = moto::app().await;
    let user: User = app.users.create_user("root", "Root", true).await.unwrap();
    let (project, _) = e2e::stores::start_import(&app, &user, "gap", synthetic_archive(50)).await;
    e2e::stores::work_queue(&app).await;
    let project = app.projects.project(project.id).await.unwrap().unwrap();
    let export = service::schedule_export(&app, &user, &project, None, None)
        .await
        .unwrap();
    e2e::stores::work_queue(&app).await;
    let (pk, sk) = aws::finished_pointer_key(project.id, shared::domain::JobKind::Export);
    clients
        .dynamodb
        .delete_item()
        .table_name(&names.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(sk))
        .send()
        .await
        .unwrap();
    let state = service::export_state(&app, &project).await.unwrap();
    assert_eq!(state.status, "finished");
    assert_eq!(state.finished.map(|job| job.id), Some(export.id.clone()));
    let download = service::export_download(&app, &project).await.unwrap();
    let bytes = stream::collect(app.blobs.get(&download.key).await.unwrap())
        .await
        .unwrap();
    assert_eq!(read_archive(&bytes).relations["issues"].len(), 50);
}
