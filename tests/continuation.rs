//! Imports longer than one invocation: a run past its deadline stops at a
//! safe point, records where it is and continues in a fresh message. With a
//! deadline of zero every invocation asks its reader to stop as soon as it
//! stored a record, and the reader stops at its next safe point (a few
//! thousand records later: what it read ahead is stored first), so an import
//! takes several; it must end equal to a one-invocation run, on both
//! backends, with every message delivered twice at the same moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use e2e::intercepted::{Call, Intercepted};
use e2e::stores::{cut_short, embedded_app_with, moto_app_with, start_import};
use e2e::{read_archive, synthetic_archive, ArchiveContent};
use shared::domain::{Job, JobStatus, Message, Project, User};
use shared::service;
use shared::worker::{self, Outcome};
use shared::{stream, App, Settings};

const ISSUES: usize = e2e::ISSUES_PAST_ONE_RUN;

fn embedded(settings: impl Fn(&Settings) -> Settings) -> (App, tempfile::TempDir) {
    embedded_app_with(settings)
}

async fn on_moto(settings: impl Fn(&Settings) -> Settings) -> App {
    moto_app_with(settings).await.0
}

/// Imports the synthetic project, working the queue (each message twice at
/// once) until the job is done; returns the job and what an export of the
/// project holds.
async fn import_and_export(app: &App) -> (Job, ArchiveContent) {
    let (user, project, import) = start_synthetic_import(app, "long").await;
    let job = work_until_done(app, &import.id).await;
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    (job, exported(app, &user, &project).await)
}

/// What an export of the project holds.
async fn exported(app: &App, user: &User, project: &Project) -> ArchiveContent {
    let project = app.projects.project(project.id).await.unwrap().unwrap();
    let export = service::schedule_export(app, user, &project, None, None)
        .await
        .unwrap();
    assert_eq!(
        work_until_done(app, &export.id).await.status,
        JobStatus::Finished
    );
    let download = service::export_download(app, &project).await.unwrap();
    let bytes = stream::collect(app.blobs.get(&download.key).await.unwrap())
        .await
        .unwrap();
    read_archive(&bytes)
}

/// A new administrator's import of the synthetic project at `path`, queued.
async fn start_synthetic_import(app: &App, path: &str) -> (User, Project, Job) {
    let user: User = app.users.create_user("root", "Root", true).await.unwrap();
    let (project, import) = start_import(app, &user, path, synthetic_archive(ISSUES)).await;
    (user, project, import)
}

async fn work_until_done(app: &App, job_id: &str) -> Job {
    work_until_done_retrying(app, job_id, false).await
}

/// `work_until_done`, where a delivery may also end in a retry (when
/// `retries`), delivered again at once.
async fn work_until_done_retrying(app: &App, job_id: &str, retries: bool) -> Job {
    for _ in 0..2_000 {
        let job = app.jobs.job(job_id).await.unwrap().unwrap();
        if job.status.is_done() {
            return job;
        }
        let deliveries = app
            .queue
            .receive(10, Duration::from_secs(30))
            .await
            .unwrap();
        if deliveries.is_empty() {
            // A message sent for later (a migration polling a source still
            // exporting) is not there yet.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for delivery in deliveries {
            let message = &delivery.message;
            let (a, b) = tokio::join!(
                worker::attempt(app, message, delivery.receive_count),
                worker::attempt(app, message, delivery.receive_count)
            );
            if retries && (a, b) != (Outcome::Done, Outcome::Done) {
                app.queue
                    .retry(&delivery.receipt, Duration::ZERO)
                    .await
                    .unwrap();
                continue;
            }
            assert_eq!((a, b), (Outcome::Done, Outcome::Done));
            app.queue.ack(&delivery.receipt).await.unwrap();
        }
    }
    panic!("job {job_id} is not done");
}

/// Every relation's records in the job's generation are the counts the job
/// says it stored: a loss shows here, before any export reads them.
async fn assert_stored_as_counted(app: &App, job: &Job) {
    let resume = job.resume.as_ref().expect("the import was cut short");
    let at = shared::ports::GenerationRef::new(job.project_id, &resume.generation);
    let stored: std::collections::BTreeMap<String, u64> = app
        .content
        .relations(at)
        .await
        .unwrap()
        .into_iter()
        .map(|stats| (stats.relation, stats.records))
        .collect();
    let counted: std::collections::BTreeMap<String, u64> = job
        .relation_counts
        .iter()
        .filter(|(_, counts)| counts.stored > 0)
        .map(|(relation, counts)| (relation.clone(), counts.stored))
        .collect();
    assert_eq!(stored, counted, "{job:?}");
}

fn assert_continued(job: &Job, at_least: u32) {
    let resume = job.resume.as_ref().expect("the import was cut short");
    assert!(
        resume.invocations >= at_least,
        "{} invocations",
        resume.invocations
    );
    let issues = &job.relation_counts["issues"];
    assert_eq!((issues.read, issues.stored), (ISSUES as u64, ISSUES as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_short_continues_and_ends_equal_on_the_embedded_store() {
    let (whole, _a) = embedded(Settings::clone);
    let (_, in_one_run) = import_and_export(&whole).await;
    let (cut, _b) = embedded(cut_short);
    let (job, continued) = import_and_export(&cut).await;
    // 1,000 records a batch: every relation's batches and both files.
    assert_continued(&job, 5);
    assert_stored_as_counted(&cut, &job).await;
    assert_eq!(continued, in_one_run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_short_continues_and_ends_equal_on_aws() {
    e2e::log_when_asked();
    let (_, in_one_run) = import_and_export(&on_moto(Settings::clone).await).await;
    let cut = on_moto(cut_short).await;
    let (job, continued) = import_and_export(&cut).await;
    // 4 MiB chunks: each relation and each file is an invocation's share.
    assert_continued(&job, 3);
    assert_stored_as_counted(&cut, &job).await;
    assert_eq!(continued, in_one_run);
}

/// The run stopped and recorded where it was, but its message for the next
/// invocation never left: the original message, delivered again, continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_whose_message_was_lost_goes_on_from_the_redelivered_one() {
    let (app, _dir) = embedded(cut_short);
    let (_, _, import) = start_synthetic_import(&app, "lost").await;
    let first = app.queue.receive(1, Duration::from_secs(30)).await.unwrap();
    let original = first[0].message.clone();
    assert_eq!(worker::attempt(&app, &original, 1).await, Outcome::Done);
    let paused = app.jobs.job(&import.id).await.unwrap().unwrap();
    assert_eq!(paused.status, JobStatus::Started);
    assert_eq!(paused.resume.as_ref().map(|r| r.invocations), Some(1));
    // The continuation message is lost.
    app.queue.ack(&first[0].receipt).await.unwrap();
    let next = app.queue.receive(1, Duration::from_secs(30)).await.unwrap();
    app.queue.ack(&next[0].receipt).await.unwrap();
    assert_eq!(worker::attempt(&app, &original, 2).await, Outcome::Done);
    let continued = app.jobs.job(&import.id).await.unwrap().unwrap();
    assert_eq!(continued.resume.as_ref().map(|r| r.invocations), Some(2));
    assert!(continued.processed > paused.processed);
    let done = work_until_done(&app, &import.id).await;
    assert_eq!(done.status, JobStatus::Finished);
    assert_eq!(done.relation_counts["issues"].stored, ISSUES as u64);
    assert_eq!(Message::for_job(&done).job_id, import.id);
}

/// The local server's `--invocation-budget`: an import continued over many
/// invocations of its workers imports every record.
#[test]
fn the_local_servers_invocation_budget_continues_imports() {
    let server = e2e::Server::start_with(&["--invocation-budget", "0"]);
    let archive = synthetic_archive(ISSUES);
    let expanded = {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&archive[..]), &mut out)
            .unwrap();
        out.len() as u64
    };
    let size = archive.len() as u64;
    let status = server.import_and_wait(e2e::ROOT_TOKEN, archive, &[("path", "budget")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    let id = status["id"].as_u64().unwrap();
    let import = server
        .get(Some(e2e::ROOT_TOKEN), &format!("/projects/{id}/import"))
        .json::<serde_json::Value>()
        .unwrap();
    assert_eq!(import["import_status"], "finished");
    // How far it got, across its invocations: the whole archive, each
    // byte inflated about once (a stop throws away what was read ahead).
    let progress = &import["import_progress"];
    assert_eq!(progress["archive_bytes"], size, "{progress}");
    assert_eq!(progress["archive_bytes_read"], size, "{progress}");
    assert_eq!(progress["estimated_seconds_left"], 0, "{progress}");
    assert!(progress["invocations"].as_u64().unwrap() >= 3, "{progress}");
    let inflated = progress["inflated_bytes"].as_u64().unwrap();
    let runs = progress["invocations"].as_u64().unwrap();
    assert!(
        inflated >= expanded,
        "{progress}: {expanded} bytes uncompressed"
    );
    assert!(inflated <= expanded + runs * 4 * 1024 * 1024, "{progress}");
    let response = server.post(Some(e2e::ROOT_TOKEN), &format!("/projects/{id}/export"));
    assert_eq!(response.status(), 202);
    server.wait_export(e2e::ROOT_TOKEN, id);
    let (_, _, archive) =
        server.fetch_file(e2e::ROOT_TOKEN, &format!("/projects/{id}/export/download"));
    assert_eq!(read_archive(&archive).relations["issues"].len(), ISSUES);
}

/// A blob too big for one run (40 MiB and a bit: five 8 MiB parts and a
/// short one) is stored part by part across invocations, each delivered
/// twice at once, and an export gives it back byte for byte.
async fn a_big_blob_crosses_invocations(app: &App) {
    let blob = e2e::noise(40 * 1024 * 1024 + 12_345, 7);
    let archive = e2e::tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", br#"{"description":"big blob"}"#),
        ("tree/project/labels.ndjson", b"{\"title\":\"bug\"}\n"),
        ("project.bundle", &blob),
        ("uploads/abc123/after.txt", b"after the big one"),
    ]);
    let user: User = app.users.create_user("root", "Root", true).await.unwrap();
    let (project, import) = start_import(app, &user, "big-blob", archive).await;
    let job = work_until_done(app, &import.id).await;
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    let runs = job.archive_progress.as_ref().unwrap().invocations;
    assert!(runs >= 3, "{runs} invocations");
    let exported = exported(app, &user, &project).await;
    assert!(
        exported.files["project.bundle"] == blob,
        "the bundle changed"
    );
    assert_eq!(
        exported.files["uploads/abc123/after.txt"],
        b"after the big one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_blob_crosses_invocations_on_the_embedded_store() {
    let (app, _dir) = embedded(cut_short);
    a_big_blob_crosses_invocations(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_blob_crosses_invocations_on_aws() {
    a_big_blob_crosses_invocations(&on_moto(cut_short).await).await;
}

/// Only the first run asks the store for the archive's size (a LIST on
/// S3): the runs after it know it from the run before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continued_run_does_not_list_the_archive_again() {
    let (app, _dir) = embedded(cut_short);
    let listings = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = listings.clone();
    let before = move |call: &Call| -> BoxFuture<'static, shared::Result<()>> {
        if let Call::List { prefix } = call {
            seen.lock().unwrap().push(prefix.clone());
        }
        Box::pin(async { Ok(()) })
    };
    let counted = App {
        blobs: Arc::new(Intercepted::new(app.blobs.clone(), before)),
        ..app.clone()
    };
    let (_, _, import) = start_synthetic_import(&counted, "listed").await;
    let job = work_until_done(&counted, &import.id).await;
    assert_eq!(job.status, JobStatus::Finished);
    assert_continued(&job, 5);
    let upload = job.archive_key.clone().unwrap();
    let of_the_archive = listings
        .lock()
        .unwrap()
        .iter()
        .filter(|prefix| **prefix == upload)
        .count();
    assert_eq!(
        of_the_archive,
        1,
        "the archive listed once in {} runs",
        job.resume.unwrap().invocations
    );
}

/// A continued run that fails for a reason a retry can fix (the store
/// refuses to store the archive's last file, as a network would) keeps what
/// the runs before it stored: the retry goes on from the last checkpoint
/// into the same generation, and the import ends equal to one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continued_run_failing_for_a_while_keeps_what_earlier_runs_stored() {
    let (whole, _a) = embedded(Settings::clone);
    let (_, in_one_run) = import_and_export(&whole).await;
    let (app, _b) = embedded(cut_short);
    let failed = Arc::new(AtomicBool::new(false));
    let once = failed.clone();
    let before = move |call: &Call| -> BoxFuture<'static, shared::Result<()>> {
        // The bundle comes after the relations: a run continuing others.
        let bundle = matches!(call, Call::Put { key } if key.ends_with("/project.bundle"));
        let fail = bundle && !once.swap(true, Ordering::SeqCst);
        Box::pin(async move {
            match fail {
                true => Err(shared::Error::Storage("connection reset by peer".into())),
                false => Ok(()),
            }
        })
    };
    let failing = App {
        blobs: Arc::new(Intercepted::new(app.blobs.clone(), before)),
        ..app.clone()
    };
    let (user, project, import) = start_synthetic_import(&failing, "long").await;
    let job = work_until_done_retrying(&failing, &import.id, true).await;
    assert!(
        failed.load(Ordering::SeqCst),
        "no continued run read the archive"
    );
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    assert_continued(&job, 3);
    assert_eq!(exported(&app, &user, &project).await, in_one_run);
}

/// A migration too big for one invocation: the source is a local server
/// (its project past one run, its repository bundle past what a run
/// stages), the destination an application whose every run stops as soon
/// as it may, each message (the job's, each file's) delivered twice at the
/// same moment. The bundle comes in ranges over several runs, the staged
/// files are read where they are across the runs, and the project ends
/// equal to the source's, records and files.
async fn a_migration_crosses_invocations(app: &App) {
    let (source, from) = tokio::task::spawn_blocking(|| {
        let source = e2e::Server::start();
        let bundle = e2e::noise(20 * 1024 * 1024, 3);
        let archive = e2e::synthetic_archive_with_bundle(ISSUES, &bundle);
        let imported = source.import_and_wait(e2e::ROOT_TOKEN, archive, &[("path", "big")]);
        assert_eq!(imported["import_status"], "finished", "{imported}");
        let id = imported["id"].as_u64().unwrap();
        let (_, exported) = source.export_and_download(e2e::ROOT_TOKEN, id);
        (source, read_archive(&exported))
    })
    .await
    .unwrap();
    // The pieces the bundle is staged in: how often each number was put.
    let pieces = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let seen = pieces.clone();
    let before = move |call: &Call| -> BoxFuture<'static, shared::Result<()>> {
        if let Call::Put { key } = call {
            let name = key.rsplit('/').next().unwrap_or_default();
            if let Some(piece) = name.strip_prefix("repository.0.") {
                if let Some(number) = piece.strip_suffix(".piece") {
                    let number = number.rsplit('.').next().unwrap().parse::<u32>().unwrap();
                    *seen.lock().unwrap().entry(number).or_insert(0) += 1;
                }
            }
        }
        Box::pin(async { Ok(()) })
    };
    let app = &App {
        blobs: Arc::new(Intercepted::new(app.blobs.clone(), before)),
        ..app.clone()
    };
    let user: User = app.users.create_user("root", "Root", true).await.unwrap();
    let request = shared::service::bulk_imports::NewBulkImport {
        url: source.base.clone(),
        access_token: e2e::ROOT_TOKEN.into(),
        entities: vec![shared::service::bulk_imports::NewEntity {
            source_full_path: "root/big".into(),
            destination_slug: "migrated".into(),
            destination_namespace: "root".into(),
            migrate_projects: true,
            migrate_memberships: true,
        }],
    };
    let migration = shared::service::bulk_imports::create(app, &user, request)
        .await
        .unwrap();
    let entity = &migration.entities[0];
    let job = work_until_done(app, &entity.job_id).await;
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    assert_continued(&job, 3);
    let pieces = pieces.lock().unwrap().clone();
    assert!(
        pieces.len() >= 3,
        "the bundle was staged in pieces {pieces:?}"
    );
    // Each message twice at once: each piece twice, never more (the two
    // runs of a delivery queue one message between them).
    assert!(
        pieces.values().all(|puts| *puts <= 2),
        "pieces put more often than their deliveries: {pieces:?}"
    );
    let project = app
        .projects
        .project(entity.project_id)
        .await
        .unwrap()
        .unwrap();
    let to = exported(app, &user, &project).await;
    let mut expected = from.relations.clone();
    expected.remove("project_members");
    assert_eq!(to.relations, expected);
    assert_eq!(to.attributes, from.attributes);
    assert_eq!(to.files, from.files);
    tokio::task::spawn_blocking(move || drop(source))
        .await
        .unwrap();
}

fn local_sources(settings: &Settings) -> Settings {
    Settings {
        allow_local_requests: true,
        ..cut_short(settings)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_crosses_invocations_on_the_embedded_store() {
    e2e::log_when_asked();
    let (app, _dir) = embedded(local_sources);
    a_migration_crosses_invocations(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_crosses_invocations_on_aws() {
    a_migration_crosses_invocations(&on_moto(local_sources).await).await;
}
