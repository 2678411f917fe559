//! Every worker message kind delivered twice at the same moment, and again
//! after it finished, and every job taken over after a run died at each of
//! its steps: nothing published is ever lost, nothing is stored twice.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use e2e::contract::embedded_app;
use e2e::{read_archive, synthetic_archive};
use shared::domain::{now, Job, JobStatus, JobUpdate, LeaseChange, Message, Project, User, When};
use shared::ports::GenerationRef;
use shared::service::{self, ImportRequest};
use shared::worker::{self, Outcome, MAX_RECEIVES};
use shared::{stream, App};

const ISSUES: usize = 1_500;

async fn admin(app: &App) -> User {
    app.users.create_user("root", "Root", true).await.unwrap()
}

async fn put_upload(app: &App, archive: Vec<u8>) -> String {
    let key = service::upload_key(&shared::domain::new_id());
    app.blobs
        .put(&key, stream::from_bytes(archive))
        .await
        .unwrap();
    key
}

async fn start_import(app: &App, user: &User, path: &str, overwrite: bool) -> (Project, Job) {
    let key = put_upload(app, synthetic_archive(ISSUES)).await;
    let request = ImportRequest {
        path: path.into(),
        namespace: None,
        name: None,
        overwrite,
        overrides: Vec::new(),
    };
    service::start_import(app, user, &request, &key)
        .await
        .unwrap()
}

/// A project of `user` at `path` with the synthetic archive imported.
async fn imported_project(app: &App, user: &User, path: &str) -> Project {
    let (project, job) = start_import(app, user, path, false).await;
    worker::attempt(app, &Message::for_job(&job), 1).await;
    app.projects.project(project.id).await.unwrap().unwrap()
}

/// Starts an unbatched relations export and takes its messages off the
/// queue: the one for `issues`.
async fn issues_part_message(app: &App, project: &Project) -> Message {
    service::relation_export::start_run(app, project, false)
        .await
        .unwrap();
    let deliveries = app
        .queue
        .receive(100, Duration::from_secs(60))
        .await
        .unwrap();
    deliveries
        .into_iter()
        .map(|d| d.message)
        .find(|m| m.relation.as_deref() == Some("issues"))
        .unwrap()
}

/// Issues in the project's downloadable export.
async fn downloaded_issues(app: &App, project: &Project) -> usize {
    let download = service::export_download(app, project).await.unwrap();
    let bytes = stream::collect(app.blobs.get(&download.key).await.unwrap())
        .await
        .unwrap();
    read_archive(&bytes).relations["issues"].len()
}

/// The same message handled by two workers at once: both settle it.
async fn twice_at_once(app: &App, message: &Message) {
    let (a, b) = tokio::join!(
        worker::attempt(app, message, 1),
        worker::attempt(app, message, 1)
    );
    assert_eq!((a, b), (Outcome::Done, Outcome::Done));
}

/// Records per relation of what the project shows.
async fn shown(app: &App, project_id: u64) -> BTreeMap<String, u64> {
    let project = app.projects.project(project_id).await.unwrap().unwrap();
    service::content_relations(app, &project)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, stats)| (stats.relation, stats.records))
        .collect()
}

fn expected_counts() -> BTreeMap<String, u64> {
    [
        ("issues".to_owned(), ISSUES as u64),
        ("labels".to_owned(), 2),
        ("merge_requests".to_owned(), ISSUES.div_ceil(10) as u64),
    ]
    .into()
}

/// Every generation some run of `job` wrote, other than the one shown, is
/// gone.
async fn only_the_shown_generation_is_left(app: &App, job: &Job) {
    let job = app.jobs.job(&job.id).await.unwrap().unwrap();
    let project = app.projects.project(job.project_id).await.unwrap().unwrap();
    let shown = project.generations();
    for attempt in 1..=job.attempt + 1 {
        let generation = job.generation(attempt);
        if shown.contains(&generation) {
            continue;
        }
        let at = GenerationRef::new(job.project_id, &generation);
        let left = app.content.relations(at).await.unwrap();
        assert!(left.is_empty(), "{generation} left behind: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_delivered_twice_at_once_publishes_once_and_loses_nothing() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    for round in 0..4 {
        let (project, job) = start_import(&app, &user, "twice", round > 0).await;
        let message = Message::for_job(&job);
        twice_at_once(&app, &message).await;
        let done = app.jobs.job(&job.id).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Finished, "round {round}: {done:?}");
        assert_eq!(
            shown(&app, project.id).await,
            expected_counts(),
            "round {round}"
        );
        // Delivered once more after it finished: nothing changes.
        assert_eq!(worker::attempt(&app, &message, 2).await, Outcome::Done);
        assert_eq!(shown(&app, project.id).await, expected_counts());
        only_the_shown_generation_is_left(&app, &job).await;
    }
}

/// One issue record in `generation`: what a run wrote before it stopped.
async fn write_one_issue(app: &App, project_id: u64, generation: &str) {
    let record = Bytes::from_static(b"{\"iid\":1}");
    let at = GenerationRef::new(project_id, generation);
    let writer = 1;
    assert!(app
        .content
        .claim_generation(at, writer, &Default::default())
        .await
        .unwrap());
    app.content
        .put_records(at, writer, "issues", 0, vec![record])
        .await
        .unwrap();
}

/// Claims the job as a run that then died: its lease has run out.
async fn claimed_by_a_dead_run(app: &App, job: &Job) -> Job {
    let claimed = app
        .jobs
        .transition(
            &job.id,
            When::Unleased(now()),
            JobStatus::Started,
            JobUpdate {
                lease: Some(LeaseChange::Claim {
                    until: now() - chrono::Duration::seconds(1),
                }),
                ..JobUpdate::default()
            },
        )
        .await
        .unwrap();
    claimed.expect("the job could be claimed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_died_before_switching_is_redone_and_its_leftovers_removed() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let (project, job) = start_import(&app, &user, "died", false).await;
    let dead = claimed_by_a_dead_run(&app, &job).await;
    let partial = dead.generation(dead.attempt);
    write_one_issue(&app, project.id, &partial).await;

    assert_eq!(
        worker::attempt(&app, &Message::for_job(&job), 2).await,
        Outcome::Done
    );
    let done = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.attempt), (JobStatus::Finished, 2));
    assert_eq!(shown(&app, project.id).await, expected_counts());
    assert!(app
        .content
        .relations(GenerationRef::new(project.id, &partial))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_died_after_switching_is_finished_without_redoing_it() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let (project, job) = start_import(&app, &user, "switched", false).await;
    let dead = claimed_by_a_dead_run(&app, &job).await;
    let published = dead.generation(dead.attempt);
    let record = Bytes::from_static(b"{\"iid\":1,\"title\":\"kept\"}");
    let at = GenerationRef::new(project.id, &published);
    assert!(app
        .content
        .claim_generation(at, dead.attempt, &Default::default())
        .await
        .unwrap());
    app.content
        .put_records(at, dead.attempt, "issues", 0, vec![record])
        .await
        .unwrap();
    let mut switched = app.projects.project(project.id).await.unwrap().unwrap();
    switched.content = Some(published.clone());
    assert!(app.projects.switch_content(&switched).await.unwrap());

    assert_eq!(
        worker::attempt(&app, &Message::for_job(&job), 2).await,
        Outcome::Done
    );
    let done = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Finished);
    // What the dead run published is what the project shows, untouched.
    let now_shown = app.projects.project(project.id).await.unwrap().unwrap();
    assert_eq!(now_shown.content.as_deref(), Some(published.as_str()));
    assert_eq!(
        shown(&app, project.id).await,
        [("issues".to_owned(), 1)].into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_live_run_holds_is_left_to_it() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let (project, job) = start_import(&app, &user, "held", false).await;
    let live = app
        .jobs
        .transition(
            &job.id,
            When::Unleased(now()),
            JobStatus::Started,
            JobUpdate {
                lease: Some(LeaseChange::Claim {
                    until: now() + chrono::Duration::seconds(60),
                }),
                ..JobUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    let message = Message::for_job(&job);
    assert_eq!(worker::attempt(&app, &message, 1).await, Outcome::Done);
    // Even on its last delivery: the live run is not failed under it.
    assert_eq!(
        worker::attempt(&app, &message, MAX_RECEIVES).await,
        Outcome::Done
    );
    let after = app.jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.attempt),
        (JobStatus::Started, live.attempt)
    );
    assert!(shown(&app, project.id).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relation_import_delivered_twice_at_once_merges_once() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let project = imported_project(&app, &user, "merged").await;
    let path = format!("{}/merged", user.username);
    // The same issues and 500 new ones.
    let bigger = e2e::synthetic_archive(ISSUES + 500);
    for round in 0..3 {
        let key = put_upload(&app, bigger.clone()).await;
        let (_, relation_job) = service::start_relation_import(&app, &user, &path, "issues", &key)
            .await
            .unwrap();
        twice_at_once(&app, &Message::for_job(&relation_job)).await;
        let done = app.jobs.job(&relation_job.id).await.unwrap().unwrap();
        assert_eq!(done.status, JobStatus::Finished, "round {round}: {done:?}");
        let mut expected = expected_counts();
        expected.insert("issues".into(), (ISSUES + 500) as u64);
        assert_eq!(shown(&app, project.id).await, expected, "round {round}");
        only_the_shown_generation_is_left(&app, &relation_job).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_delivered_twice_at_once_gives_one_whole_archive() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let project = imported_project(&app, &user, "exported").await;
    let export = service::schedule_export(&app, &user, &project, None, None)
        .await
        .unwrap();
    twice_at_once(&app, &Message::for_job(&export)).await;
    assert_eq!(
        worker::attempt(&app, &Message::for_job(&export), 2).await,
        Outcome::Done
    );
    assert_eq!(downloaded_issues(&app, &project).await, ISSUES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relation_export_parts_delivered_twice_at_once_each_finish_once() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let project = imported_project(&app, &user, "parts").await;
    service::relation_export::start_run(&app, &project, true)
        .await
        .unwrap();
    let mut messages = Vec::new();
    loop {
        let deliveries = app
            .queue
            .receive(10, Duration::from_secs(60))
            .await
            .unwrap();
        if deliveries.is_empty() {
            break;
        }
        for delivery in deliveries {
            app.queue.ack(&delivery.receipt).await.unwrap();
            messages.push(delivery.message);
        }
    }
    assert!(messages.len() > 3, "{messages:?}");
    for message in &messages {
        twice_at_once(&app, message).await;
    }
    let parts = app.jobs.relation_export_parts(project.id).await.unwrap();
    // A batched relation's own row derives its status from its batches.
    for part in parts.iter().filter(|p| !(p.batched && p.batch.is_none())) {
        assert_eq!(part.status, JobStatus::Finished, "{part:?}");
    }
    let issues_batches: u64 = parts
        .iter()
        .filter(|p| p.relation == "issues" && p.batch.is_some())
        .map(|p| p.exported)
        .sum();
    assert_eq!(issues_batches, ISSUES as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relation_export_part_failing_every_delivery_ends_failed() {
    let (app, dir) = embedded_app();
    let user = admin(&app).await;
    let project = imported_project(&app, &user, "failing").await;
    let message = issues_part_message(&app, &project).await;
    // The blob store breaks: every delivery fails.
    let blobs = dir.path().join("blobs");
    std::fs::rename(&blobs, dir.path().join("blobs-saved")).unwrap();
    std::fs::write(&blobs, b"not a directory").unwrap();
    for attempt in 1..MAX_RECEIVES {
        assert_eq!(
            worker::attempt(&app, &message, attempt).await,
            Outcome::Retry
        );
    }
    assert_eq!(
        worker::attempt(&app, &message, MAX_RECEIVES).await,
        Outcome::Done
    );
    let parts = app.jobs.relation_export_parts(project.id).await.unwrap();
    let issues = parts.iter().find(|p| p.relation == "issues").unwrap();
    assert_eq!(issues.status, JobStatus::Failed, "{issues:?}");
    let error = issues.error.as_deref().unwrap();
    assert!(error.starts_with("gave up after"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relation_import_whose_run_died_is_redone_or_finished() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let project = imported_project(&app, &user, "relations").await;
    let path = format!("{}/relations", user.username);
    let bigger = synthetic_archive(ISSUES + 10);

    // Died before switching, leaving a partial merge and staging area.
    let key = put_upload(&app, bigger.clone()).await;
    let (_, before) = service::start_relation_import(&app, &user, &path, "issues", &key)
        .await
        .unwrap();
    let dead = claimed_by_a_dead_run(&app, &before).await;
    let partial = dead.generation(dead.attempt);
    for generation in [partial.clone(), format!("{partial}-staged")] {
        write_one_issue(&app, project.id, &generation).await;
    }
    assert_eq!(
        worker::attempt(&app, &Message::for_job(&before), 2).await,
        Outcome::Done
    );
    let done = app.jobs.job(&before.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Finished, "{done:?}");
    let mut expected = expected_counts();
    expected.insert("issues".into(), (ISSUES + 10) as u64);
    assert_eq!(shown(&app, project.id).await, expected);
    for generation in [partial.clone(), format!("{partial}-staged")] {
        assert!(app
            .content
            .relations(GenerationRef::new(project.id, &generation))
            .await
            .unwrap()
            .is_empty());
    }

    // Died after switching: finished as it is, not merged again.
    let key = put_upload(&app, synthetic_archive(ISSUES + 20)).await;
    let (_, after) = service::start_relation_import(&app, &user, &path, "issues", &key)
        .await
        .unwrap();
    let dead = claimed_by_a_dead_run(&app, &after).await;
    let published = dead.generation(dead.attempt);
    write_one_issue(&app, project.id, &published).await;
    let mut switched = app.projects.project(project.id).await.unwrap().unwrap();
    switched
        .relation_content
        .insert("issues".into(), published.clone());
    assert!(app.projects.switch_content(&switched).await.unwrap());
    assert_eq!(
        worker::attempt(&app, &Message::for_job(&after), 2).await,
        Outcome::Done
    );
    let done = app.jobs.job(&after.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Finished);
    assert_eq!(shown(&app, project.id).await["issues"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_run_died_is_built_again() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let project = imported_project(&app, &user, "died-export").await;
    let export = service::schedule_export(&app, &user, &project, None, None)
        .await
        .unwrap();
    claimed_by_a_dead_run(&app, &export).await;
    assert_eq!(
        worker::attempt(&app, &Message::for_job(&export), 2).await,
        Outcome::Done
    );
    assert_eq!(downloaded_issues(&app, &project).await, ISSUES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relation_export_part_whose_run_died_is_built_again() {
    let (app, _dir) = embedded_app();
    let user = admin(&app).await;
    let project = imported_project(&app, &user, "died-part").await;
    let message = issues_part_message(&app, &project).await;
    // A run took the part and died.
    app.jobs
        .transition_relation_export_part(
            project.id,
            "issues",
            None,
            &message.job_id,
            &[JobStatus::Queued],
            JobStatus::Started,
            JobUpdate::default(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(worker::attempt(&app, &message, 2).await, Outcome::Done);
    let parts = app.jobs.relation_export_parts(project.id).await.unwrap();
    let issues = parts.iter().find(|p| p.relation == "issues").unwrap();
    assert_eq!(
        (issues.status, issues.exported),
        (JobStatus::Finished, ISSUES as u64)
    );
}
