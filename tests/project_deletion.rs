//! `DELETE /projects/:id` on both backends, with the real workers: after a
//! project has been imported, exported, relations-exported (batched and
//! not), relation-imported and scheduled, its deletion leaves the stores
//! holding exactly what they held before it was created; an import or an
//! export running while it is deleted ends without bringing it back or
//! leaving anything behind.

use std::time::Duration;

use e2e::contract::embedded_app;
use e2e::moto;
use e2e::stores::{
    self, cut_short, embedded_app_with, holdings, moto_app_with, upload, work_queue, Table,
};
use e2e::synthetic_archive;
use shared::domain::{JobKind, JobStatus, Project, User};
use shared::ports::GenerationRef;
use shared::service::{self, relation_export};
use shared::worker::{self, Outcome};
use shared::App;

const ISSUES: usize = 600;

async fn start_import(app: &App, user: &User, path: &str) -> (Project, String) {
    start_import_of(app, user, path, ISSUES).await
}

async fn start_import_of(app: &App, user: &User, path: &str, issues: usize) -> (Project, String) {
    let archive = synthetic_archive(issues);
    let (project, job) = stores::start_import(app, user, path, archive).await;
    (project, job.id)
}

/// Imports a project and puts it through every operation that stores
/// something; returns it as it is then.
async fn a_project_with_everything(app: &App, user: &User) -> Project {
    let (project, import) = start_import(app, user, "everything").await;
    work_queue(app).await;
    let job = app.jobs.job(&import).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Finished, "{job:?}");
    let project = app.projects.project(project.id).await.unwrap().unwrap();

    service::schedule_export(app, user, &project, None, None)
        .await
        .unwrap();
    work_queue(app).await;
    for batched in [false, true] {
        relation_export::start_run(app, &project, batched)
            .await
            .unwrap();
        work_queue(app).await;
    }
    let key = upload(app, synthetic_archive(ISSUES)).await;
    service::start_relation_import(app, user, &project.full_path(), "issues", &key)
        .await
        .unwrap();
    work_queue(app).await;
    let request = service::schedule::ScheduleRequest {
        relations: false,
        batched: false,
        keep: 2,
    };
    service::schedule::set(app, &project, request)
        .await
        .unwrap();
    // An import that failed, with its own history.
    let key = upload(app, b"not an archive".to_vec()).await;
    let failed = service::start_relation_import(app, user, &project.full_path(), "labels", &key)
        .await
        .unwrap()
        .1;
    work_queue(app).await;
    assert_eq!(
        app.jobs.job(&failed.id).await.unwrap().unwrap().status,
        JobStatus::Failed
    );
    let project = app.projects.project(project.id).await.unwrap().unwrap();
    assert_eq!(project.relation_content.len(), 1, "{project:?}");
    project
}

async fn everything_goes(app: &App, table: Option<Table<'_>>) {
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let before = holdings(app, table).await;
    let project = a_project_with_everything(app, &user).await;
    let during = holdings(app, table).await;
    let prefix = |p: &str| during.iter().filter(|k| k.contains(p)).count();
    assert!(prefix(&format!("projects/{}/", project.id)) > 0);
    assert!(prefix(&format!("exports/{}/relations/", project.id)) > 0);

    // Every generation the project's content and imports wrote.
    let mut generations = project.generations();
    for job in app.jobs.all_project_jobs(project.id).await.unwrap() {
        generations.extend((1..=job.attempt).map(|a| job.generation(a)));
        generations.extend((1..=job.attempt).map(|a| format!("{}-staged", job.generation(a))));
    }
    let held_content = |generations: Vec<String>| async move {
        let mut held = Vec::new();
        for name in generations {
            let at = GenerationRef::new(project.id, &name);
            let relations = app.content.relations(at).await.unwrap();
            let attributes = app.content.attributes(at).await.unwrap();
            if !relations.is_empty() || attributes.is_some() {
                held.push(name);
            }
        }
        held
    };
    assert!(held_content(generations.clone()).await.len() >= 2);

    service::delete_project(app, &project).await.unwrap();
    // Gone at once, its path free, a second deletion refused as GitLab's 404.
    assert_eq!(app.projects.project(project.id).await.unwrap(), None);
    let reference = service::ProjectRef::Path(project.full_path());
    assert!(service::find_project(app, &user, &reference).await.is_err());
    assert!(service::delete_project(app, &project).await.is_err());
    work_queue(app).await;
    assert_eq!(holdings(app, table).await, before, "all of it is gone");
    assert_eq!(held_content(generations).await, Vec::<String>::new());

    // The path takes a new import at once.
    let (again, _) = start_import(app, &user, "everything").await;
    assert_ne!(again.id, project.id);
    work_queue(app).await;
    let again = app.projects.project(again.id).await.unwrap().unwrap();
    assert!(again.content.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_project_leaves_nothing_on_the_embedded_store() {
    let (app, _dir) = embedded_app();
    everything_goes(&app, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_project_leaves_nothing_on_aws() {
    let (app, clients, names) = moto::app().await;
    everything_goes(&app, Some(Table::of(&clients, &names))).await;
}

/// An import cut short (it continues in a later invocation) whose project
/// is deleted before it goes on: the continuation ends it without
/// switching anything in, and nothing it wrote stays, whether it runs
/// before or after the deletion's own message.
async fn an_import_under_way(app: &App, table: Option<Table<'_>>) {
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let before = holdings(app, table).await;
    for deletion_first in [false, true] {
        let (project, import) =
            start_import_of(app, &user, "under-way", e2e::ISSUES_PAST_ONE_RUN).await;
        let first = app.queue.receive(1, Duration::from_secs(30)).await.unwrap();
        assert_eq!(
            worker::attempt(app, &first[0].message, 1).await,
            Outcome::Done
        );
        app.queue.ack(&first[0].receipt).await.unwrap();
        let paused = app.jobs.job(&import).await.unwrap().unwrap();
        assert!(paused.resume.is_some(), "{paused:?}");

        service::delete_project(app, &project).await.unwrap();
        let mut pending = app
            .queue
            .receive(10, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(pending.len(), 2, "the continuation and the deletion");
        if deletion_first {
            pending.reverse();
        }
        for delivery in pending {
            let outcome = worker::attempt(app, &delivery.message, 1).await;
            assert_eq!(outcome, Outcome::Done);
            app.queue.ack(&delivery.receipt).await.unwrap();
        }
        work_queue(app).await;
        assert_eq!(app.projects.project(project.id).await.unwrap(), None);
        assert_eq!(holdings(app, table).await, before, "{deletion_first}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_under_way_ends_with_its_deleted_project_on_the_embedded_store() {
    let (app, _dir) = embedded_app_with(cut_short);
    an_import_under_way(&app, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_under_way_ends_with_its_deleted_project_on_aws() {
    let (app, clients, names) = moto_app_with(cut_short).await;
    an_import_under_way(&app, Some(Table::of(&clients, &names))).await;
}

/// Exports and relations exports run at the same moment as the deletion,
/// in every order the runtime picks: whatever the interleaving, nothing is
/// left once the queue is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_racing_the_deletion_leave_nothing() {
    let (app, _dir) = embedded_app();
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let before = holdings(&app, None).await;
    let (project, _) = start_import(&app, &user, "racing").await;
    work_queue(&app).await;
    let project = app.projects.project(project.id).await.unwrap().unwrap();
    service::schedule_export(&app, &user, &project, None, None)
        .await
        .unwrap();
    relation_export::start_run(&app, &project, true)
        .await
        .unwrap();
    let messages = app
        .queue
        .receive(10, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(messages.iter().any(|d| d.message.kind == JobKind::Export));
    let runs = messages.iter().map(|delivery| {
        let app = app.clone();
        let message = delivery.message.clone();
        tokio::spawn(async move { worker::attempt(&app, &message, 1).await })
    });
    let runs: Vec<_> = runs.collect();
    service::delete_project(&app, &project).await.unwrap();
    for run in runs {
        assert_eq!(run.await.unwrap(), Outcome::Done);
    }
    for delivery in &messages {
        app.queue.ack(&delivery.receipt).await.unwrap();
    }
    work_queue(&app).await;
    assert_eq!(holdings(&app, None).await, before);
}

/// The deletion's message was lost (the process died between deleting the
/// project and sending it): the stale-job sweep finds the project still
/// listed as deleted and sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_deletion_message_is_sent_again_by_the_sweep() {
    use shared::worker::sweep::{sweep_stale_jobs, STALE_AFTER};
    let (app, _dir) = embedded_app();
    let user = app.users.create_user("root", "Root", true).await.unwrap();
    let before = holdings(&app, None).await;
    let (project, _) = start_import(&app, &user, "lost").await;
    work_queue(&app).await;
    app.projects.delete_project(project.id).await.unwrap();
    let now = shared::domain::now();
    let summary = sweep_stale_jobs(&app, now, STALE_AFTER).await.unwrap();
    assert_eq!(summary.requeued, 0, "not yet: its message may be under way");
    let later = now + chrono::Duration::from_std(STALE_AFTER).unwrap();
    let later = later + chrono::Duration::seconds(1);
    let summary = sweep_stale_jobs(&app, later, STALE_AFTER).await.unwrap();
    assert_eq!(summary.requeued, 1);
    work_queue(&app).await;
    assert_eq!(holdings(&app, None).await, before);
    assert!(app.projects.deleted_projects(10).await.unwrap().is_empty());
}
