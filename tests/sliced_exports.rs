//! One export written by many workers: the archive's slices, each a queue
//! message compressing its stretch of the tar stream into one part of the
//! archive's upload, joined behind the gzip trailer. On both backends the
//! archive is the one-stream export's, entry for entry; every message is
//! delivered twice at once; a lost one is queued again through the sweep;
//! one failing every time fails the export and drops its parts.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use e2e::intercepted::{Call, Intercepted};
use e2e::stores::{start_import, work_queue};
use e2e::{noise, read_archive, synthetic_archive};
use shared::domain::{Job, JobKind, JobStatus, Project, User};
use shared::worker::sweep::{sweep_stale_jobs, STALE_AFTER};
use shared::worker::{self, Outcome};
use shared::{service, stream, App, Settings};

const ISSUES: usize = 3_000;

fn sliced(settings: &Settings, slice_bytes: u64) -> Settings {
    Settings {
        export_slice_bytes: slice_bytes,
        ..settings.clone()
    }
}

async fn imported(app: &App, user: &User, path: &str, archive: Vec<u8>) -> Project {
    let (project, job) = start_import(app, user, path, archive).await;
    work_queue(app).await;
    let job = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    app.projects.project(project.id).await.unwrap().unwrap()
}

/// Exports the project, working the queue (each message twice at once);
/// returns the archive and how many slice messages there were.
async fn export(app: &App, user: &User, project: &Project) -> (Vec<u8>, usize) {
    let job = service::schedule_export(app, user, project, None, None)
        .await
        .unwrap();
    let slices = work_queue(app)
        .await
        .iter()
        .filter(|message| message.kind == JobKind::ExportSlice)
        .count();
    let job = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    (downloaded(app, project).await, slices)
}

async fn downloaded(app: &App, project: &Project) -> Vec<u8> {
    let download = service::export_download(app, project).await.unwrap();
    stream::collect(app.blobs.get(&download.key).await.unwrap())
        .await
        .unwrap()
}

/// Every entry's path and bytes, in order.
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    tar.entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (path, data)
        })
        .collect()
}

/// The sliced archive against the one-stream archive of the same project,
/// then imported again.
async fn same_as_one_stream(
    sliced: &App,
    whole: &App,
    user: &User,
    project: &Project,
    (issues, min_slices): (usize, usize),
) {
    let (in_slices, slices) = export(sliced, user, project).await;
    let (in_one, none) = export(whole, user, project).await;
    assert!(slices >= min_slices, "{slices} slice messages");
    assert_eq!(none, 0);
    let (a, b) = (entries(&in_slices), entries(&in_one));
    assert_eq!(
        a.iter().map(|(p, _)| p).collect::<Vec<_>>(),
        b.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for ((path, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{path} differs");
    }
    e2e::standard_tools_read(&in_slices, issues);
    // Nothing of the slices is left beside the archive.
    let folder = shared::keys::exports_prefix(project.id);
    let left: Vec<String> = sliced
        .blobs
        .list(&folder)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.key)
        .filter(|k| !k.ends_with("/export.tar.gz"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    let again = imported(sliced, user, "again", in_slices).await;
    let (archive, _) = export(sliced, user, &again).await;
    assert_eq!(read_archive(&archive).relations["issues"].len(), issues);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliced_export_is_the_one_stream_export_entry_for_entry() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        shared::embedded::EmbeddedBackend::open(dir.path(), "http://127.0.0.1:9").unwrap();
    let whole = App::embedded(&backend, Settings::default());
    let sliced = App::embedded(&backend, sliced(&Settings::default(), 64 * 1024));
    let user = whole.users.create_user("root", "Root", true).await.unwrap();
    let project = imported(&whole, &user, "big", synthetic_archive(ISSUES)).await;
    same_as_one_stream(&sliced, &whole, &user, &project, (ISSUES, 4)).await;
    // Every upload in parts was completed or dropped.
    let parts = std::fs::read_dir(dir.path().join("blobs/.parts")).unwrap();
    assert_eq!(parts.count(), 0);
}

/// Takes every message off the queue.
async fn take_all(app: &App) -> Vec<shared::ports::Delivery> {
    let mut all = Vec::new();
    loop {
        let deliveries = app
            .queue
            .receive(10, Duration::from_secs(30))
            .await
            .unwrap();
        if deliveries.is_empty() {
            return all;
        }
        all.extend(deliveries);
    }
}

/// The export job run once: it plans the slices and queues them.
async fn planned(app: &App, user: &User, project: &Project) -> (Job, Vec<shared::ports::Delivery>) {
    let job = service::schedule_export(app, user, project, None, None)
        .await
        .unwrap();
    for delivery in take_all(app).await {
        assert_eq!(
            worker::attempt(app, &delivery.message, 1).await,
            Outcome::Done
        );
        app.queue.ack(&delivery.receipt).await.unwrap();
    }
    let slices = take_all(app).await;
    assert!(slices.len() >= 4, "{} slices", slices.len());
    assert!(slices
        .iter()
        .all(|d| d.message.kind == JobKind::ExportSlice));
    (job, slices)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slice_message_is_queued_again_through_the_sweep() {
    let (app, _dir) = e2e::stores::embedded_app_with(|s| sliced(s, 64 * 1024));
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let project = imported(&app, &user, "lost", synthetic_archive(ISSUES)).await;
    let (job, slices) = planned(&app, &user, &project).await;
    // The second slice's message is lost; the others are handled.
    for (n, delivery) in slices.iter().enumerate() {
        if n != 1 {
            assert_eq!(
                worker::attempt(&app, &delivery.message, 1).await,
                Outcome::Done
            );
        }
        app.queue.ack(&delivery.receipt).await.unwrap();
    }
    assert!(
        take_all(&app).await.is_empty(),
        "the job waits for its slice"
    );
    let waiting = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Started);
    assert!(waiting.processed > 0, "progress shown: {waiting:?}");

    let later = shared::domain::now() + chrono::Duration::hours(1);
    let swept = sweep_stale_jobs(&app, later, STALE_AFTER).await.unwrap();
    assert_eq!(swept.requeued, 1);
    work_queue(&app).await;
    let done = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Finished, "{done:?}");
    let content = read_archive(&downloaded(&app, &project).await);
    assert_eq!(content.relations["issues"].len(), ISSUES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_failing_every_delivery_fails_the_export_and_drops_its_parts() {
    let dir = tempfile::tempdir().unwrap();
    let backend =
        shared::embedded::EmbeddedBackend::open(dir.path(), "http://127.0.0.1:9").unwrap();
    let app = App::embedded(&backend, sliced(&Settings::default(), 64 * 1024));
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let project = imported(&app, &user, "failing", synthetic_archive(ISSUES)).await;
    let (job, slices) = planned(&app, &user, &project).await;
    // The project's files went after the plan: the slice with the bundle
    // cannot be written.
    let generation = project.content.clone().unwrap();
    app.blobs
        .delete_prefix(&shared::keys::content_files_prefix(project.id, &generation))
        .await
        .unwrap();
    for delivery in &slices {
        let outcome = worker::attempt(&app, &delivery.message, worker::MAX_RECEIVES).await;
        assert_eq!(outcome, Outcome::Done);
        app.queue.ack(&delivery.receipt).await.unwrap();
    }
    let failed = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("gave up"),
        "{failed:?}"
    );
    let left = app
        .blobs
        .list(&shared::keys::exports_prefix(project.id))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let parts = std::fs::read_dir(dir.path().join("blobs/.parts")).unwrap();
    assert_eq!(parts.count(), 0, "the upload's parts are dropped");
}

/// A slice delivered twice, the copies a step apart: the late copy has
/// stored its part and not yet its record when the early copy writes the
/// same slice and the export completes (joined, finished, its slice
/// records cleared). The late copy's record, stored after the clearing, is
/// deleted again: nothing of the slices outlives the export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_a_slice_leaves_nothing_behind_the_finished_export() {
    let (app, dir) = e2e::stores::embedded_app_with(|s| sliced(s, 64 * 1024));
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let project = imported(&app, &user, "late", synthetic_archive(ISSUES)).await;
    let (job, slices) = planned(&app, &user, &project).await;
    let (last, others) = slices.split_last().unwrap();
    for delivery in others {
        let outcome = worker::attempt(&app, &delivery.message, 1).await;
        assert_eq!(outcome, Outcome::Done);
        app.queue.ack(&delivery.receipt).await.unwrap();
    }
    let slice = last.message.batch.unwrap() as usize;
    let (early, message) = (app.clone(), last.message.clone());
    let meanwhile = async move {
        let outcome = worker::attempt(&early, &message, 1).await;
        assert_eq!(outcome, Outcome::Done);
        // The early copy queued the job, which joins the slices.
        let worked = work_queue(&early).await;
        assert!(
            worked.iter().any(|m| m.kind == JobKind::Export),
            "{worked:?}"
        );
    };
    // Once, just before the late copy stores its slice's record.
    let record = shared::keys::export_slice_record_key(project.id, &job.id, slice);
    let meanwhile: Mutex<Option<BoxFuture<'static, ()>>> = Mutex::new(Some(Box::pin(meanwhile)));
    let before = move |call: &Call| -> BoxFuture<'static, shared::Result<()>> {
        let run = match call {
            Call::Put { key } if *key == record => meanwhile.lock().unwrap().take(),
            _ => None,
        };
        Box::pin(async move {
            if let Some(run) = run {
                run.await;
            }
            Ok(())
        })
    };
    let late = App {
        blobs: Arc::new(Intercepted::new(app.blobs.clone(), before)),
        ..app.clone()
    };
    assert_eq!(
        worker::attempt(&late, &last.message, 1).await,
        Outcome::Done
    );
    app.queue.ack(&last.receipt).await.unwrap();

    let done = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Finished, "{done:?}");
    let left: Vec<String> = app
        .blobs
        .list(&shared::keys::exports_prefix(project.id))
        .await
        .unwrap()
        .into_iter()
        .map(|blob| blob.key)
        .collect();
    assert_eq!(left.len(), 1, "only the archive: {left:?}");
    assert!(left[0].ends_with("export.tar.gz"), "{left:?}");
    let parts = std::fs::read_dir(dir.path().join("blobs/.parts")).unwrap();
    assert_eq!(parts.count(), 0);
    let content = read_archive(&downloaded(&app, &project).await);
    assert_eq!(content.relations["issues"].len(), ISSUES);
}

/// On S3 (moto, which holds parts to S3's 5 MiB), with two uploads of
/// noise: two slices of 6 MiB each, every part as large as S3 wants it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_the_slices_are_parts_of_one_multipart_upload() {
    let (whole, clients, names) = e2e::stores::moto_app_with(Settings::clone).await;
    let sliced = shared_aws::app(&clients, &names, sliced(&whole.settings, 11 << 19));
    let user = whole.users.create_user("root", "Root", true).await.unwrap();
    let issues = "{\"iid\":1,\"title\":\"one\"}\n{\"iid\":2,\"title\":\"two\"}\n";
    let (one, two) = (noise(6 << 20, 1), noise(6 << 20, 2));
    let archive = e2e::tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", b"{\"description\":\"noise\"}"),
        ("tree/project/issues.ndjson", issues.as_bytes()),
        ("uploads/aa/one.bin", &one),
        ("uploads/bb/two.bin", &two),
    ]);
    let project = imported(&whole, &user, "noise", archive).await;
    let (_, slices) = export(&sliced, &user, &project).await;
    assert_eq!(slices, 2);
    // S3 names an object completed from N parts by an ETag ending in -N:
    // the two slices and the trailer.
    assert!(etag(&sliced, &clients, &names, &project)
        .await
        .ends_with("-3\""));
    same_as_one_stream(&sliced, &whole, &user, &project, (2, 2)).await;
}

/// A blob bigger than a slice (a repository bundle) is cut between slices,
/// each writing its piece from a ranged read, and comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_a_blob_bigger_than_a_slice_is_cut_between_slices() {
    let (whole, clients, names) = e2e::stores::moto_app_with(Settings::clone).await;
    let sliced = shared_aws::app(&clients, &names, sliced(&whole.settings, 11 << 19));
    let user = whole.users.create_user("root", "Root", true).await.unwrap();
    let bundle = noise(23 << 20, 3);
    let archive = e2e::tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", b"{\"description\":\"bundle\"}"),
        (
            "tree/project/issues.ndjson",
            b"{\"iid\":1,\"title\":\"one\"}\n",
        ),
        ("project.bundle", &bundle),
    ]);
    let project = imported(&whole, &user, "bundle", archive).await;
    let (exported, slices) = export(&sliced, &user, &project).await;
    assert!(slices >= 4, "{slices} slice messages");
    let bundle_out = entries(&exported)
        .into_iter()
        .find(|(path, _)| path == "project.bundle")
        .unwrap()
        .1;
    assert!(bundle_out == bundle, "the bundle changed");
    same_as_one_stream(&sliced, &whole, &user, &project, (1, 4)).await;
}

/// The S3 ETag of the project's downloadable export.
async fn etag(
    app: &App,
    clients: &shared_aws::AwsClients,
    names: &shared_aws::AwsNames,
    project: &Project,
) -> String {
    let download = service::export_download(app, project).await.unwrap();
    let head = clients
        .s3
        .head_object()
        .bucket(&names.bucket)
        .key(&download.key)
        .send()
        .await
        .unwrap();
    head.e_tag().unwrap().to_owned()
}

/// Slices that compress below S3's least part: the upload is dropped and
/// the archive written in one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_slices_too_small_for_parts_fall_back_to_one_stream() {
    let (whole, clients, names) = e2e::stores::moto_app_with(Settings::clone).await;
    let sliced = shared_aws::app(&clients, &names, sliced(&whole.settings, 64 * 1024));
    let user = whole.users.create_user("root", "Root", true).await.unwrap();
    let project = imported(&whole, &user, "small", synthetic_archive(ISSUES)).await;
    export(&sliced, &user, &project).await;
    // One plain PUT: no part count in the ETag.
    assert!(!etag(&sliced, &clients, &names, &project)
        .await
        .contains('-'));
    same_as_one_stream(&sliced, &whole, &user, &project, (ISSUES, 4)).await;
}
