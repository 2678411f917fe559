//! Jobs that end without their runs (a worker killed on every delivery, a
//! job stalled until the sweep fails it) leave nothing behind: the
//! generations their runs were writing, their uploaded archive, an
//! unfinished export's archive. On both backends.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::contract::embedded_app;
use e2e::stores::{cut_short, embedded_app_with, holdings, moto_app_with, start_import, Table};
use e2e::synthetic_archive;
use shared::domain::{Job, JobKind, JobStatus, JobUpdate, Message, When};
use shared::worker::sweep::{sweep_stale_jobs, MAX_STALLS};
use shared::worker::{self, Outcome, MAX_RECEIVES};
use shared::{stream, App};

/// What the store holds for `job` beyond its own record and history.
async fn left_by(app: &App, table: Option<Table<'_>>, job: &Job) -> Vec<String> {
    holdings(app, table)
        .await
        .into_iter()
        .filter(|k| (k.contains(&job.id) && !k.contains("JOB")) || k.contains("imports/"))
        .collect()
}

/// An import that stored part of its archive, stopped at its deadline, and
/// whose continuation then killed the worker on every delivery.
async fn an_import_given_up(app: &App, table: Option<Table<'_>>) {
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let (project, import) = start_import(
        app,
        &user,
        "given-up",
        synthetic_archive(e2e::ISSUES_PAST_ONE_RUN),
    )
    .await;
    let first = app.queue.receive(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        worker::attempt(app, &first[0].message, 1).await,
        Outcome::Done
    );
    app.queue.ack(&first[0].receipt).await.unwrap();
    let paused = app.jobs.job(&import.id).await.unwrap().unwrap();
    assert!(paused.processed > 0, "{paused:?}");
    assert!(!left_by(app, table, &paused).await.is_empty());
    let generation = paused.generation(1);
    let written = shared::ports::GenerationRef::new(project.id, &generation);
    assert!(!app.content.relations(written).await.unwrap().is_empty());

    // The continuation's deliveries all died: the next one gives up.
    let next = app.queue.receive(1, Duration::from_secs(30)).await.unwrap();
    let outcome = worker::attempt(app, &next[0].message, MAX_RECEIVES + 1).await;
    assert_eq!(outcome, Outcome::Done);
    let failed = app.jobs.job(&import.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    assert_eq!(left_by(app, table, &failed).await, Vec::<String>::new());
    assert!(app.content.relations(written).await.unwrap().is_empty());
    let project = app.projects.project(project.id).await.unwrap().unwrap();
    assert_eq!(project.content, None, "nothing was switched in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_given_up_leaves_nothing_on_the_embedded_store() {
    let (app, _dir) = embedded_app_with(cut_short);
    an_import_given_up(&app, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_given_up_leaves_nothing_on_aws() {
    let (app, clients, names) = moto_app_with(cut_short).await;
    an_import_given_up(&app, Some(Table::of(&clients, &names))).await;
}

/// An export whose worker died after uploading part of its archive, and
/// which stalled until the sweep failed it: the part goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_export_failed_by_the_sweep_leaves_no_archive() {
    let (app, _dir) = embedded_app();
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let (project, import) = start_import(&app, &user, "stalled", synthetic_archive(10)).await;
    assert_eq!(
        worker::attempt(&app, &Message::for_job(&import), 1).await,
        Outcome::Done
    );
    let export = Job::new(JobKind::Export, project.id, user.id);
    app.jobs.create_job(&export).await.unwrap();
    let update = JobUpdate {
        stalls: Some(MAX_STALLS),
        ..JobUpdate::default()
    };
    let started = When::status_in(&[JobStatus::Queued]);
    app.jobs
        .transition(&export.id, started, JobStatus::Started, update)
        .await
        .unwrap()
        .unwrap();
    let partial = shared::keys::export_key(project.id, &export.id);
    app.blobs
        .put(&partial, stream::from_bytes(b"half an archive".to_vec()))
        .await
        .unwrap();

    let later = shared::domain::now() + chrono::Duration::minutes(1);
    let swept = sweep_stale_jobs(&app, later, Duration::ZERO).await.unwrap();
    assert_eq!(swept.failed, 1);
    let failed = app.jobs.job(&export.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(left_by(&app, None, &failed).await, Vec::<String>::new());
}

/// Writes a generation's records and one file, as a run would.
async fn write_generation(app: &App, project_id: u64, name: &str) {
    use shared::ports::GenerationRef;
    let at = GenerationRef::new(project_id, name);
    assert!(app
        .content
        .claim_generation(at, 1, &Default::default())
        .await
        .unwrap());
    let record = bytes::Bytes::from_static(b"{\"iid\":1}");
    app.content
        .put_records(at, 1, "issues", 0, vec![record])
        .await
        .unwrap();
    put_blob(
        app,
        &format!(
            "{}a.bin",
            shared::keys::content_files_prefix(project_id, name)
        ),
    )
    .await;
}

async fn put_blob(app: &App, key: &str) {
    app.blobs
        .put(key, stream::from_bytes(b"left".to_vec()))
        .await
        .unwrap();
}

async fn has_records(app: &App, project_id: u64, name: &str) -> bool {
    let at = shared::ports::GenerationRef::new(project_id, name);
    !app.content.relations(at).await.unwrap().is_empty()
}

/// What a killed process can leave (generations of a failed or unknown
/// job, an upload no job reads, an export of no job, a superseded
/// relations export run, the folders of a project that is gone) is swept;
/// what a project shows, a live job writes or reads, and the current
/// archives stay. A second sweep finds nothing.
async fn leftovers_are_swept(app: &App, table: Option<Table<'_>>) {
    use shared::keys;
    use shared::worker::leftovers::{grace, sweep_leftovers, LeftoverSummary};
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let (project, _) = start_import(app, &user, "kept", synthetic_archive(20)).await;
    e2e::stores::work_queue(app).await;
    shared::service::schedule_export(app, &user, &project, None, None)
        .await
        .unwrap();
    shared::service::relation_export::start_run(app, &project, false)
        .await
        .unwrap();
    e2e::stores::work_queue(app).await;
    let live_before = holdings(app, table).await;

    // A failed job's generation and staging area; a job no one knows.
    let failed = Job::new(JobKind::RelationImport, project.id, user.id);
    app.jobs.create_job(&failed).await.unwrap();
    let to_failed = When::status_in(&[JobStatus::Queued]);
    app.jobs
        .transition(
            &failed.id,
            to_failed,
            JobStatus::Failed,
            JobUpdate::default(),
        )
        .await
        .unwrap();
    let failed_generation = failed.generation(1);
    let staged = format!("{failed_generation}-staged");
    write_generation(app, project.id, &failed_generation).await;
    write_generation(app, project.id, &staged).await;
    write_generation(app, project.id, "ghost.1").await;
    // A live import: its generation and its upload stay.
    let (_, live) = start_import(app, &user, "live", synthetic_archive(5)).await;
    let live_generation = live.generation(1);
    write_generation(app, live.project_id, &live_generation).await;
    // Folders of no one.
    put_blob(app, &keys::upload_key("orphan-upload")).await;
    put_blob(app, &keys::export_key(project.id, "no-such-job")).await;
    let old_run =
        keys::relation_export_part_key(project.id, "old-run", "issues", None, "issues.ndjson.gz");
    put_blob(app, &old_run).await;
    put_blob(
        app,
        &format!("{}content/g.1/files/a", keys::project_prefix(424_242)),
    )
    .await;
    put_blob(app, &keys::export_key(424_242, "gone")).await;
    // An upload in parts whose run died after its first part.
    let abandoned = keys::export_key(project.id, "abandoned");
    let upload = app.blobs.start_parts(&abandoned).await.unwrap();
    app.blobs
        .put_part(
            &abandoned,
            &upload,
            1,
            shared::stream::from_bytes(vec![7; 64]),
        )
        .await
        .unwrap();

    let later = shared::domain::now() + chrono::Duration::days(2);
    let swept = sweep_leftovers(app, later, grace(app)).await.unwrap();
    assert_eq!(
        swept,
        LeftoverSummary {
            generations: 3,
            folders: 5,
            // S3's are its lifecycle rule's to abort.
            parts: usize::from(table.is_none()),
        }
    );
    for name in [&failed_generation, &staged, "ghost.1"] {
        assert!(!has_records(app, project.id, name).await, "{name}");
    }
    assert!(has_records(app, live.project_id, &live_generation).await);
    let live_upload = keys::upload_folder(live.archive_key.as_deref().unwrap());
    let left: BTreeSet<String> = holdings(app, table)
        .await
        .into_iter()
        .filter(|k| !k.contains(&failed.id) && !k.contains(&live.id))
        .filter(|k| !k.contains(&format!("PROJECT#{}", live.project_id)))
        .filter(|k| !k.contains(&format!("/{}/", live.project_id)))
        .filter(|k| !k.contains("#live") && !k.contains("/live") && !k.contains(&live_upload))
        .filter(|k| !k.contains(&format!("PROJECT#{:020}", live.project_id)))
        // The failed job's pointer: the newest relation import.
        .filter(|k| !k.ends_with("LATEST#relation_import"))
        .collect();
    let expected: BTreeSet<String> = live_before
        .into_iter()
        .filter(|k| !k.contains(&failed.id))
        .collect();
    assert_eq!(left, expected, "only what live projects and jobs need");
    assert!(!app.blobs.list(&live_upload).await.unwrap().is_empty());

    let again = sweep_leftovers(app, later, grace(app)).await.unwrap();
    assert_eq!(again, LeftoverSummary::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_are_swept_on_the_embedded_store() {
    let (app, _dir) = embedded_app();
    leftovers_are_swept(&app, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftovers_are_swept_on_aws() {
    let (app, clients, names) = moto_app_with(shared::Settings::clone).await;
    leftovers_are_swept(&app, Some(Table::of(&clients, &names))).await;
}
