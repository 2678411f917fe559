//! Jobs that end without their runs (a worker killed on every delivery, a
//! job stalled until the sweep fails it) leave nothing behind: the
//! generations their runs were writing, their uploaded archive, an
//! unfinished export's archive. On both backends.

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
    let (project, import) = start_import(app, &user, "given-up", synthetic_archive(1_000)).await;
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
