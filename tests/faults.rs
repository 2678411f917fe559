//! Faults in the workers: a message that keeps failing ends with its job
//! `failed` and the reason, never stuck in `started`; a failed rebuild
//! leaves the previous archive downloadable.

use e2e::contract::embedded_app;
use shared::domain::{Job, JobKind, JobStatus, Message, NewProject, When};
use shared::service;
use shared::worker::{self, Outcome, MAX_RECEIVES};

/// A new user (`username`, display name the same) and an empty project of
/// theirs at `path`.
async fn user_with_project(
    app: &shared::App,
    username: &str,
    path: &str,
) -> (shared::domain::User, shared::domain::Project) {
    let user = app
        .users
        .create_user(username, username, false)
        .await
        .unwrap();
    let namespace = app.users.namespace(user.id).await.unwrap().unwrap();
    let project = app
        .projects
        .create_project(NewProject {
            namespace,
            path: path.into(),
            name: path.into(),
            description: None,
            owner_id: user.id,
        })
        .await
        .unwrap();
    (user, project)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_every_time_ends_its_job_failed() {
    let (app, dir) = embedded_app();
    let (user, project) = user_with_project(&app, "alice", "p").await;

    // A first export works and is downloadable.
    let first = service::schedule_export(&app, &user, &project, None, None)
        .await
        .unwrap();
    assert_eq!(
        worker::attempt(&app, &Message::for_job(&first), 1).await,
        Outcome::Done
    );
    let first_download = service::export_download(&app, &project).await.unwrap();

    // Then the blob store breaks: its directory is replaced by a file.
    let blobs = dir.path().join("blobs");
    let saved = dir.path().join("blobs-saved");
    std::fs::rename(&blobs, &saved).unwrap();
    std::fs::write(&blobs, b"not a directory").unwrap();

    let mut second = Job::new(JobKind::Export, project.id, user.id);
    second.id = "second-export".into();
    app.jobs.create_job(&second).await.unwrap();
    let message = Message::for_job(&second);
    for attempt in 1..MAX_RECEIVES {
        assert_eq!(
            worker::attempt(&app, &message, attempt).await,
            Outcome::Retry,
            "attempt {attempt}"
        );
        let job = app.jobs.job(&second.id).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Started);
    }
    // Meanwhile the previous archive is still the one offered.
    let state = service::export_state(&app, &project).await.unwrap();
    assert_eq!(state.status, "regeneration_in_progress");

    assert_eq!(
        worker::attempt(&app, &message, MAX_RECEIVES).await,
        Outcome::Done
    );
    let job = app.jobs.job(&second.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.starts_with(&format!("gave up after {MAX_RECEIVES} attempts")),
        "{error}"
    );
    // As GitLab says it while an archive exists: `finished`, and the older
    // archive is what is offered.
    assert_eq!(
        service::export_state(&app, &project).await.unwrap().status,
        "finished"
    );

    // The finished archive of the first export survives the failed rebuild.
    std::fs::remove_file(&blobs).unwrap();
    std::fs::rename(&saved, &blobs).unwrap();
    let key = app
        .jobs
        .latest_finished_job(project.id, JobKind::Export)
        .await
        .unwrap()
        .unwrap()
        .archive_key
        .unwrap();
    assert!(!shared::stream::collect(app.blobs.get(&key).await.unwrap())
        .await
        .unwrap()
        .is_empty());
    // The download still offers the first, whole archive.
    let download = service::export_download(&app, &project).await.unwrap();
    assert_eq!(download.key, first_download.key);
    assert_eq!(download.key, key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_message_was_lost_is_queued_again_then_failed() {
    use shared::worker::sweep::{sweep_stale_jobs, SweepSummary, MAX_STALLS, STALE_AFTER};
    let (app, _dir) = embedded_app();
    let (user, project) = user_with_project(&app, "bob", "lost").await;
    let started = |job: &Job| {
        let app = app.clone();
        let id = job.id.clone();
        async move {
            app.jobs
                .transition(
                    &id,
                    When::status_in(&[JobStatus::Queued]),
                    JobStatus::Started,
                    shared::domain::JobUpdate::default(),
                )
                .await
                .unwrap()
                .unwrap()
        }
    };
    // A worker claimed the job and died; its message is gone.
    let job = Job::new(JobKind::Export, project.id, user.id);
    app.jobs.create_job(&job).await.unwrap();
    started(&job).await;
    let now = shared::domain::now();
    assert_eq!(
        sweep_stale_jobs(&app, now, STALE_AFTER).await.unwrap(),
        SweepSummary::default(),
        "not stale yet"
    );
    let later = now + chrono::Duration::minutes(31);
    let swept = sweep_stale_jobs(&app, later, STALE_AFTER).await.unwrap();
    assert_eq!(
        swept,
        SweepSummary {
            requeued: 1,
            failed: 0
        }
    );
    // The message is back: a worker finishes the job.
    let deliveries = app
        .queue
        .receive(10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    worker::process_delivery(&app, &deliveries[0]).await;
    let done = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.stalls), (JobStatus::Finished, 1));

    // A job that stalls again and again ends failed, with the reason.
    let stuck = Job::new(JobKind::Import, project.id, user.id);
    app.jobs.create_job(&stuck).await.unwrap();
    started(&stuck).await;
    for round in 0..=MAX_STALLS {
        let at = shared::domain::now() + chrono::Duration::minutes(1);
        let swept = sweep_stale_jobs(&app, at, std::time::Duration::ZERO)
            .await
            .unwrap();
        let expected = if round < MAX_STALLS {
            SweepSummary {
                requeued: 1,
                failed: 0,
            }
        } else {
            SweepSummary {
                requeued: 0,
                failed: 1,
            }
        };
        assert_eq!(swept, expected, "round {round}");
    }
    let failed = app.jobs.job(&stuck.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .starts_with("the job stalled"),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_the_status_points_at_is_never_pruned() {
    let (app, _dir) = embedded_app();
    let (user, project) = user_with_project(&app, "carol", "served").await;
    // Two exports in flight; the newer one finishes first.
    let older = service::schedule_export(&app, &user, &project, None, None)
        .await
        .unwrap();
    let newer = service::schedule_export(&app, &user, &project, None, None)
        .await
        .unwrap();
    for job in [&newer, &older] {
        assert_eq!(
            worker::attempt(&app, &Message::for_job(job), 1).await,
            Outcome::Done
        );
    }
    let state = service::export_state(&app, &project).await.unwrap();
    assert_eq!(state.status, "finished");
    let download = service::export_download(&app, &project).await.unwrap();
    assert!(
        app.blobs.get(&download.key).await.is_ok(),
        "the archive the status offers is there"
    );
    // The one it replaced a moment ago stays while a URL to it may live.
    let replaced = app.jobs.job(&newer.id).await.unwrap().unwrap();
    let replaced_key = replaced.archive_key.unwrap();
    assert_ne!(replaced_key, download.key);
    assert!(app.blobs.get(&replaced_key).await.is_ok());

    // A third export, once no URL to the second-newest can still be alive.
    let settings = shared::Settings {
        download_ttl: std::time::Duration::ZERO,
        ..shared::Settings::default()
    };
    let strict = shared::App {
        settings: std::sync::Arc::new(settings),
        ..app.clone()
    };
    let third = service::schedule_export(&strict, &user, &project, None, None)
        .await
        .unwrap();
    assert_eq!(
        worker::attempt(&strict, &Message::for_job(&third), 1).await,
        Outcome::Done
    );
    let download = service::export_download(&strict, &project).await.unwrap();
    assert!(strict.blobs.get(&download.key).await.is_ok());
    assert!(strict.blobs.get(&replaced_key).await.is_err(), "pruned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_its_last_attempt_fails_its_job_without_running_it() {
    let (app, _dir) = embedded_app();
    let user = app.users.create_user("dave", "Dave", false).await.unwrap();
    let (project, job) =
        upload_and_import(&app, &user, "crashing", e2e::synthetic_archive(10)).await;
    // Every earlier delivery crashed the worker: this one only fails the job.
    assert_eq!(
        worker::attempt(&app, &Message::for_job(&job), MAX_RECEIVES + 1).await,
        Outcome::Done
    );
    let failed = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.attempt, 0, "never run");
    let error = failed.error.unwrap();
    assert!(
        error.contains("the worker stopped during each of them"),
        "{error}"
    );
    let project = app.projects.project(project.id).await.unwrap().unwrap();
    assert_eq!(project.content, None);
}

/// Stores `archive` as an upload and queues its import as `path`.
async fn upload_and_import(
    app: &shared::App,
    user: &shared::domain::User,
    path: &str,
    archive: Vec<u8>,
) -> (shared::domain::Project, Job) {
    let key = service::upload_key(&shared::domain::new_id());
    app.blobs
        .put(&key, shared::stream::from_bytes(archive))
        .await
        .unwrap();
    let request = service::ImportRequest {
        path: path.into(),
        ..service::ImportRequest::default()
    };
    service::start_import(app, user, &request, &key)
        .await
        .unwrap()
}

/// A project whose archive has `relations` one-record unknown relations,
/// imported; and its owner.
async fn project_with_relations(
    app: &shared::App,
    username: &str,
    relations: usize,
) -> (shared::domain::User, shared::domain::Project) {
    project_with_records(app, username, relations, |_| 1).await
}

/// A project of `relations` relations, relation `i` holding `records(i)`.
async fn project_with_records(
    app: &shared::App,
    username: &str,
    relations: usize,
    records: impl Fn(usize) -> usize,
) -> (shared::domain::User, shared::domain::Project) {
    let user = app
        .users
        .create_user(username, username, false)
        .await
        .unwrap();
    let mut entries: Vec<(String, Vec<u8>)> = vec![
        ("VERSION".into(), b"0.2.4".to_vec()),
        ("tree/project.json".into(), b"{}".to_vec()),
    ];
    for i in 0..relations {
        entries.push((
            format!("tree/project/extra_{i:04}.ndjson"),
            b"{\"n\":1}\n".repeat(records(i)),
        ));
    }
    let borrowed: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let (project, job) = upload_and_import(
        app,
        &user,
        &format!("{username}-project"),
        e2e::tar_gz(&borrowed),
    )
    .await;
    drain(app).await;
    let done = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Finished, "{done:?}");
    (
        user,
        app.projects.project(project.id).await.unwrap().unwrap(),
    )
}

/// Runs the queue until it is empty; returns the messages in the order run.
async fn drain(app: &shared::App) -> Vec<Message> {
    let mut ran = Vec::new();
    loop {
        let deliveries = app
            .queue
            .receive(1, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let Some(delivery) = deliveries.into_iter().next() else {
            return ran;
        };
        worker::process_delivery(app, &delivery).await;
        ran.push(delivery.message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relations_export_never_holds_the_queue_against_other_projects() {
    let (app, _dir) = embedded_app();
    let window = app.settings.relation_export_window;
    let (_, big) = project_with_relations(&app, "erin", 200).await;
    service::relation_export::start_run(&app, &big, false)
        .await
        .unwrap();
    // Another user's import arrives after the export was scheduled.
    let other = app
        .users
        .create_user("frank", "Frank", false)
        .await
        .unwrap();
    let (_, small) = upload_and_import(&app, &other, "small", e2e::synthetic_archive(1)).await;
    let ran = drain(&app).await;
    let position = ran
        .iter()
        .position(|m| m.job_id == small.id)
        .expect("the import ran");
    assert!(
        position <= window,
        "the import waited behind {position} messages (window {window})"
    );
    // Every part of the export still ran, once each, and the run ended.
    let parts = app.jobs.relation_export_parts(big.id).await.unwrap();
    assert!(parts.len() > 200);
    assert!(
        parts.iter().all(|p| p.status == JobStatus::Finished),
        "{parts:?}"
    );
    let run = app.jobs.job(&parts[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.status, JobStatus::Finished);
    let part_messages = ran.iter().filter(|m| m.job_id == run.id).count();
    assert_eq!(part_messages, parts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_reaches_past_any_number_of_relations_without_messages() {
    // Empty relations of a batched export get no message: nineteen of them
    // between two that do, with a window of two.
    let (app, _dir) = embedded_app();
    let settings = shared::Settings {
        relation_export_window: 2,
        ..(*app.settings).clone()
    };
    let app = shared::App {
        settings: std::sync::Arc::new(settings),
        ..app
    };
    let (_, project) =
        project_with_records(&app, "hana", 80, |i| if i % 20 == 0 { 3 } else { 0 }).await;
    service::relation_export::start_run(&app, &project, true)
        .await
        .unwrap();
    drain(&app).await;
    let parts = app.jobs.relation_export_parts(project.id).await.unwrap();
    let batches: Vec<_> = parts.iter().filter(|p| p.batch.is_some()).collect();
    assert_eq!(batches.len(), 4);
    assert!(
        batches.iter().all(|p| p.status == JobStatus::Finished),
        "{batches:?}"
    );
    let run = app.jobs.job(&parts[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.status, JobStatus::Finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_relation_export_part_is_found_by_the_sweep() {
    use shared::worker::sweep::{sweep_stale_jobs, STALE_AFTER};
    let (app, _dir) = embedded_app();
    let (_, project) = project_with_relations(&app, "gina", 3).await;
    service::relation_export::start_run(&app, &project, false)
        .await
        .unwrap();
    // Every message is lost.
    let lost = app
        .queue
        .receive(100, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    for delivery in &lost {
        app.queue.ack(&delivery.receipt).await.unwrap();
    }
    assert!(!lost.is_empty());
    let later = shared::domain::now() + chrono::Duration::minutes(31);
    let swept = sweep_stale_jobs(&app, later, STALE_AFTER).await.unwrap();
    assert!(swept.requeued >= lost.len(), "{swept:?}");
    drain(&app).await;
    let parts = app.jobs.relation_export_parts(project.id).await.unwrap();
    assert!(
        parts.iter().all(|p| p.status == JobStatus::Finished),
        "{parts:?}"
    );
    let run = app.jobs.job(&parts[0].run_id).await.unwrap().unwrap();
    assert_eq!(run.status, JobStatus::Finished);
}

/// A late delivery for a replaced relations export (its run ends and
/// prunes) never deletes the files of the run that replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_prune_for_an_old_relations_export_leaves_the_newer_run() {
    let dir = tempfile::tempdir().unwrap();
    let backend = shared::embedded::EmbeddedBackend::open(dir.path(), "http://127.0.0.1:9")
        .expect("embedded backend");
    let settings = shared::Settings {
        download_ttl: std::time::Duration::ZERO,
        ..shared::Settings::default()
    };
    let app = shared::App::embedded(&backend, settings);
    let (_, project) = project_with_relations(&app, "gail", 3).await;
    let runs_with_files = || async {
        let prefix = shared::keys::relation_exports_prefix(project.id);
        let mut runs: Vec<String> = app
            .blobs
            .list(&prefix)
            .await
            .unwrap()
            .iter()
            .filter_map(|b| Some(b.key[prefix.len()..].split_once('/')?.0.to_owned()))
            .collect();
        runs.dedup();
        runs
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        service::relation_export::start_run(&app, &project, false)
            .await
            .unwrap();
        drain(&app).await;
        let run = app
            .jobs
            .latest_job(project.id, JobKind::RelationExport)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.status, JobStatus::Finished);
        runs.push(run);
    }
    let (first, second) = (&runs[0], &runs[1]);
    assert_eq!(runs_with_files().await, vec![second.id.clone()]);
    service::relation_export::prune_runs(&app, project.id, &[&first.id], first.created_at).await;
    assert_eq!(runs_with_files().await, vec![second.id.clone()]);
}
