//! One contract per port: the same assertions run against the embedded
//! adapter and the AWS adapter (on moto).

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;
use shared::domain::{
    now, Job, JobKind, JobStatus, JobUpdate, Message, NewProject, RelationExportPart, When,
};
use shared::ports::{ContentStore, GenerationRef, RecordPages, RelationStats, StoredRecord};
use shared::{stream, App, Error};

/// Which adapters a contract runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    /// AWS adapters on moto: download URLs can be fetched directly.
    AwsOnMoto,
}

/// An embedded application in a temporary directory.
pub fn embedded_app() -> (App, tempfile::TempDir) {
    crate::stores::embedded_app_with(shared::Settings::clone)
}

pub async fn user_store(app: &App, _backend: Backend) {
    let users = &app.users;
    let alice = users.create_user("alice", "Alice", false).await.unwrap();
    assert!(matches!(
        users.create_user("alice", "Other", false).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(users.user(alice.id).await.unwrap().as_ref(), Some(&alice));
    assert_eq!(
        users.user_by_username("alice").await.unwrap().as_ref(),
        Some(&alice)
    );
    assert_eq!(users.user_by_username("nobody").await.unwrap(), None);
    assert_eq!(users.user(999_999).await.unwrap(), None);
    let namespace = users.namespace(alice.id).await.unwrap().unwrap();
    assert_eq!(
        (namespace.path.as_str(), namespace.owner_id),
        ("alice", alice.id)
    );
    assert_eq!(
        users.namespace_by_path("alice").await.unwrap(),
        Some(namespace)
    );
    assert_eq!(users.namespace_by_path("nobody").await.unwrap(), None);
    let bob = users.create_user("bob", "Bob", true).await.unwrap();
    assert_ne!(bob.id, alice.id);
    let token = users
        .add_token(alice.id, "laptop", [1; 32], None)
        .await
        .unwrap();
    assert_eq!(
        users.token_by_hash([1; 32]).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(users.token(token.id).await.unwrap(), Some(token.clone()));
    assert_eq!(users.token(token.id + 1000).await.unwrap(), None);
    assert!(users.revoke_token(token.id).await.unwrap());
    assert!(!users.revoke_token(token.id + 1000).await.unwrap());
    let revoked = users.token_by_hash([1; 32]).await.unwrap().unwrap();
    assert!(revoked.revoked && !revoked.is_usable(shared::domain::now()));
    assert_eq!(users.token_by_hash([2; 32]).await.unwrap(), None);

    // Rate windows: `limit` uses per user, action and window.
    for _ in 0..2 {
        assert!(users
            .take_rate_slot(alice.id, "export", 60, 2)
            .await
            .unwrap());
    }
    assert!(!users
        .take_rate_slot(alice.id, "export", 60, 2)
        .await
        .unwrap());
    assert!(!users
        .take_rate_slot(alice.id, "export", 60, 2)
        .await
        .unwrap());
    assert!(users.take_rate_slot(bob.id, "export", 60, 2).await.unwrap());
    assert!(users
        .take_rate_slot(alice.id, "import", 60, 2)
        .await
        .unwrap());
    assert!(users
        .take_rate_slot(alice.id, "export", 120, 2)
        .await
        .unwrap());
}

fn records(range: std::ops::Range<u64>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("{{\"iid\":{i}}}")))
        .collect()
}

pub async fn project_store(app: &App, _backend: Backend) {
    let users = &app.users;
    let projects = &app.projects;
    let owner = users.create_user("owner", "Owner", false).await.unwrap();
    let namespace = users.namespace(owner.id).await.unwrap().unwrap();
    let new = NewProject {
        namespace: namespace.clone(),
        path: "demo".into(),
        name: "Demo".into(),
        description: None,
        owner_id: owner.id,
    };
    let project = projects.create_project(new.clone()).await.unwrap();
    assert!(matches!(
        projects.create_project(new).await,
        Err(Error::BadRequest(_))
    ));
    assert_eq!(
        projects.project(project.id).await.unwrap().as_ref(),
        Some(&project)
    );
    assert_eq!(
        projects
            .project_by_full_path("owner/demo")
            .await
            .unwrap()
            .as_ref(),
        Some(&project)
    );
    assert_eq!(
        projects.project_by_full_path("owner/none").await.unwrap(),
        None
    );

    // Lists: in id order, paged, per owner or all, with the total.
    let other = users.create_user("other", "Other", false).await.unwrap();
    let other_namespace = users.namespace(other.id).await.unwrap().unwrap();
    let mut mine = vec![project.id];
    for i in 0..3 {
        let created = projects
            .create_project(NewProject {
                namespace: namespace.clone(),
                path: format!("more-{i}"),
                name: format!("More {i}"),
                description: None,
                owner_id: owner.id,
            })
            .await
            .unwrap();
        mine.push(created.id);
    }
    projects
        .create_project(NewProject {
            namespace: other_namespace,
            path: "theirs".into(),
            name: "Theirs".into(),
            description: None,
            owner_id: other.id,
        })
        .await
        .unwrap();
    let ids =
        |page: Vec<shared::domain::Project>| page.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let (page, total) = projects.list_projects(Some(owner.id), 1, 2).await.unwrap();
    assert_eq!((ids(page), total), (mine[1..3].to_vec(), 4));
    let (page, total) = projects.list_projects(Some(owner.id), 4, 2).await.unwrap();
    assert_eq!((page.len(), total), (0, 4));
    let (page, total) = projects.list_projects(None, 0, 100).await.unwrap();
    assert_eq!((page.len(), total), (5, 5));

    // Switching content is conditional on what the project showed before.
    let mut renamed = project.clone();
    renamed.description = Some("imported".into());
    renamed.content = Some("g1".into());
    assert!(projects.switch_content(&renamed).await.unwrap());
    renamed.content = Some("g2".into());
    assert!(
        !projects.switch_content(&renamed).await.unwrap(),
        "a switch based on a stale rev must lose"
    );
    let stored = projects.project(project.id).await.unwrap().unwrap();
    assert_eq!(stored.content.as_deref(), Some("g1"));
    assert_eq!(stored.description.as_deref(), Some("imported"));
    assert_eq!(stored.content_rev, 1);
    let mut relation_switch = stored.clone();
    relation_switch
        .relation_content
        .insert("issues".into(), "g3".into());
    assert!(projects.switch_content(&relation_switch).await.unwrap());
    let stored = projects.project(project.id).await.unwrap().unwrap();
    assert_eq!(stored.relation_generation("issues"), Some("g3"));
    assert_eq!(stored.relation_generation("labels"), Some("g1"));
    assert_eq!(stored.content_rev, 2);
}

/// Deleting a project: gone at once from every lookup and list, its path
/// free, kept as deleted (with the generations it showed) until forgotten;
/// its jobs and relations export parts go with `delete_project_jobs`.
pub async fn project_deletion(app: &App, _backend: Backend) {
    let (users, projects, jobs) = (&app.users, &app.projects, &app.jobs);
    let owner = users.create_user("owner", "Owner", false).await.unwrap();
    let namespace = users.namespace(owner.id).await.unwrap().unwrap();
    let new = |path: &str| NewProject {
        namespace: namespace.clone(),
        path: path.into(),
        name: path.into(),
        description: None,
        owner_id: owner.id,
    };
    let doomed = projects.create_project(new("doomed")).await.unwrap();
    let kept = projects.create_project(new("kept")).await.unwrap();
    let mut shown = doomed.clone();
    shown.content = Some("g1".into());
    assert!(projects.switch_content(&shown).await.unwrap());
    let schedule = shared::domain::ExportSchedule {
        project_id: doomed.id,
        relations: false,
        batched: false,
        keep: 1,
        created_at: now(),
        updated_at: now(),
        last_scheduled_at: None,
    };
    projects.put_export_schedule(&schedule).await.unwrap();
    let mut own_jobs = Vec::new();
    for kind in [JobKind::Export, JobKind::Import, JobKind::RelationImport] {
        let job = Job::new(kind, doomed.id, owner.id);
        jobs.create_job(&job).await.unwrap();
        own_jobs.push(job.id);
    }
    let finished = jobs
        .transition(
            &own_jobs[0],
            When::status_in(&[JobStatus::Queued]),
            JobStatus::Finished,
            JobUpdate::default(),
        )
        .await
        .unwrap();
    assert!(finished.is_some());
    let theirs = Job::new(JobKind::Export, kept.id, owner.id);
    jobs.create_job(&theirs).await.unwrap();
    jobs.replace_relation_export(doomed.id, vec![part(doomed.id, "issues", None, "r1")])
        .await
        .unwrap();
    jobs.replace_relation_export(kept.id, vec![part(kept.id, "issues", None, "r2")])
        .await
        .unwrap();
    let mut listed: Vec<String> = jobs
        .all_project_jobs(doomed.id)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    listed.sort();
    own_jobs.sort();
    assert_eq!(listed, own_jobs);

    let removed = projects.delete_project(doomed.id).await.unwrap().unwrap();
    assert_eq!(removed.content.as_deref(), Some("g1"), "as last switched");
    assert_eq!(projects.project(doomed.id).await.unwrap(), None);
    assert_eq!(
        projects.project_by_full_path("owner/doomed").await.unwrap(),
        None
    );
    let (page, total) = projects.list_projects(Some(owner.id), 0, 10).await.unwrap();
    assert_eq!((page.len(), total), (1, 1));
    assert_eq!(projects.list_projects(None, 0, 10).await.unwrap().1, 1);
    assert_eq!(projects.export_schedule(doomed.id).await.unwrap(), None);
    assert_eq!(projects.delete_project(doomed.id).await.unwrap(), None);
    let deleted = projects.deleted_project(doomed.id).await.unwrap().unwrap();
    assert_eq!(deleted.project, removed);
    assert_eq!(projects.deleted_projects(10).await.unwrap(), vec![deleted]);
    // An import finishing after the deletion does not bring it back.
    assert!(!projects.switch_content(&removed).await.unwrap_or(false));
    assert_eq!(projects.project(doomed.id).await.unwrap(), None);
    // The path is free at once, for a project with a new id.
    let again = projects.create_project(new("doomed")).await.unwrap();
    assert_ne!(again.id, doomed.id);

    jobs.delete_project_jobs(doomed.id).await.unwrap();
    assert!(jobs.all_project_jobs(doomed.id).await.unwrap().is_empty());
    for id in &own_jobs {
        assert_eq!(jobs.job(id).await.unwrap(), None);
    }
    for kind in [JobKind::Export, JobKind::Import] {
        assert_eq!(jobs.latest_job(doomed.id, kind).await.unwrap(), None);
        assert_eq!(
            jobs.latest_finished_job(doomed.id, kind).await.unwrap(),
            None
        );
    }
    assert!(jobs
        .relation_export_parts(doomed.id)
        .await
        .unwrap()
        .is_empty());
    let stale = jobs
        .stale_jobs(now() + chrono::Duration::hours(1), 100)
        .await;
    assert_eq!(
        stale.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![theirs.id.clone()],
        "no deleted job is left active"
    );
    // Another project's jobs and parts are untouched.
    assert!(jobs.job(&theirs.id).await.unwrap().is_some());
    assert_eq!(jobs.relation_export_parts(kept.id).await.unwrap().len(), 1);
    jobs.delete_project_jobs(doomed.id).await.unwrap();

    projects.forget_deleted_project(doomed.id).await.unwrap();
    assert_eq!(projects.deleted_project(doomed.id).await.unwrap(), None);
    assert!(projects.deleted_projects(10).await.unwrap().is_empty());
    projects.forget_deleted_project(doomed.id).await.unwrap();
}

async fn read_all(
    content: &dyn ContentStore,
    at: GenerationRef<'_>,
    relation: &str,
    first: u64,
    count: u64,
    page_records: usize,
) -> Vec<StoredRecord> {
    let mut pages = RecordPages::new(content, at, relation, page_records).within(first, count);
    let mut all = Vec::new();
    while let Some(page) = pages.next().await.unwrap() {
        assert!(!page.is_empty() && page.len() <= page_records);
        all.extend(page);
    }
    all
}

fn seqs(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

pub async fn content_store(app: &App, _backend: Backend) {
    let content = app.content.as_ref();
    let g1 = GenerationRef::new(1, "g1");
    let g2 = GenerationRef::new(1, "g2");
    const W: u32 = 1;
    let none = BTreeMap::new();
    for at in [g1, g2] {
        assert!(content.claim_generation(at, W, &none).await.unwrap());
    }

    // Records: batches, a retried batch counted once, pages in order.
    content
        .put_records(g1, W, "issues", 0, records(0..3))
        .await
        .unwrap();
    content
        .put_records(g1, W, "issues", 0, records(0..3))
        .await
        .unwrap();
    content
        .put_records(g1, W, "issues", 3, records(3..5))
        .await
        .unwrap();
    let big = Bytes::from(format!("{{\"big\":\"{}\"}}", "x".repeat(500 * 1024)));
    content
        .put_records(g1, W, "merge_requests", 0, vec![big.clone()])
        .await
        .unwrap();
    // A relation whose name starts like another's stays apart from it.
    content
        .put_records(g1, W, "issues#x", 0, records(10..12))
        .await
        .unwrap();
    let mut stats = content.relations(g1).await.unwrap();
    stats.sort_by(|a, b| a.relation.cmp(&b.relation));
    let issue_bytes: u64 = records(0..5).iter().map(|r| r.len() as u64 + 1).sum();
    let lookalike_bytes: u64 = records(10..12).iter().map(|r| r.len() as u64 + 1).sum();
    assert_eq!(
        stats,
        vec![
            RelationStats {
                relation: "issues".into(),
                records: 5,
                ndjson_bytes: issue_bytes
            },
            RelationStats {
                relation: "issues#x".into(),
                records: 2,
                ndjson_bytes: lookalike_bytes
            },
            RelationStats {
                relation: "merge_requests".into(),
                records: 1,
                ndjson_bytes: big.len() as u64 + 1
            },
        ]
    );
    let first = read_all(content, g1, "issues", 0, 2, 100).await;
    assert_eq!(seqs(&first), vec![0, 1]);
    assert_eq!(first[1].json, records(1..2)[0]);
    let rest = read_all(content, g1, "issues", 2, u64::MAX, 100).await;
    assert_eq!(seqs(&rest), vec![2, 3, 4]);
    assert!(rest
        .iter()
        .zip(records(2..5))
        .all(|(got, sent)| got.json == sent));
    let large = read_all(content, g1, "merge_requests", 0, u64::MAX, 10).await;
    assert_eq!(large[0].json, big, "a big record comes back whole");
    assert!(read_all(content, g1, "labels", 0, u64::MAX, 10)
        .await
        .is_empty());
    assert!(read_all(content, g1, "issues", 5, 10, 10).await.is_empty());
    assert!(content.relations(g2).await.unwrap().is_empty());

    // Many records over several batches: a store may pack them and bound a
    // page's bytes, but paging gives each back once, in order, from any
    // record on.
    let notes: Vec<Bytes> = (0..3000)
        .map(|n| {
            Bytes::from(format!(
                "{{\"id\":{n},\"note\":\"{}\"}}",
                "n".repeat(n % 7 * 900)
            ))
        })
        .collect();
    for (first, batch) in [
        (0, 0..120),
        (120, 120..1700),
        (1700, 1700..1701),
        (1701, 1701..3000),
    ] {
        content
            .put_records(g1, W, "notes", first, notes[batch].to_vec())
            .await
            .unwrap();
    }
    let paged = read_all(content, g1, "notes", 0, u64::MAX, 1000).await;
    assert_eq!(seqs(&paged), (0..3000).collect::<Vec<u64>>());
    assert!(paged.iter().zip(&notes).all(|(got, sent)| got.json == sent));
    // Batches of a relation: their range only, over several pages, across
    // the batches it was written in.
    for (first, count) in [
        (110, 25),
        (119, 2),
        (1000, 1000),
        (1699, 3),
        (2990, 1000),
        (0, 1),
    ] {
        let batch = read_all(content, g1, "notes", first, count, 7).await;
        let expected: Vec<u64> = (first..(first + count).min(3000)).collect();
        assert_eq!(seqs(&batch), expected, "records {first}+{count}");
        assert!(batch.iter().all(|r| r.json == notes[r.seq as usize]));
    }

    let attributes = Bytes::from(format!(
        "{{\"description\":\"{}\"}}",
        "d".repeat(600 * 1024)
    ));
    content
        .put_attributes(g1, attributes.clone())
        .await
        .unwrap();
    assert_eq!(content.attributes(g1).await.unwrap(), Some(attributes));
    assert_eq!(content.attributes(g2).await.unwrap(), None);

    content
        .put_records(g2, W, "issues", 0, records(0..1))
        .await
        .unwrap();
    content.delete_content(g1).await.unwrap();
    assert!(
        matches!(
            content.put_records(g1, W, "issues", 0, records(0..1)).await,
            Err(Error::Conflict(_))
        ),
        "a deleted generation takes no more records"
    );
    assert!(content.relations(g1).await.unwrap().is_empty());
    assert!(read_all(content, g1, "issues", 0, u64::MAX, 10)
        .await
        .is_empty());
    assert_eq!(content.attributes(g1).await.unwrap(), None);
    assert_eq!(
        read_all(content, g2, "issues", 0, u64::MAX, 10).await.len(),
        1,
        "another generation is left alone"
    );
}

/// One writer at a time: a run that continues another's generation claims
/// it, cuts it back to the checkpoint, and from then on the other's writes
/// are refused, whatever they would have added.
pub async fn content_writers(app: &App, _backend: Backend) {
    let content = app.content.as_ref();
    let g = GenerationRef::new(2, "continued");
    let (first, second) = (3, 4);
    let none = BTreeMap::new();
    assert!(
        matches!(
            content
                .put_records(g, first, "issues", 0, records(0..1))
                .await,
            Err(Error::Conflict(_))
        ),
        "an unclaimed generation takes no records"
    );
    assert!(content.claim_generation(g, first, &none).await.unwrap());
    for (from, range) in [(0, 0..4), (4, 4..6)] {
        content
            .put_records(g, first, "issues", from, records(range))
            .await
            .unwrap();
    }
    content
        .put_records(g, first, "labels", 0, records(20..22))
        .await
        .unwrap();
    content
        .put_records(g, first, "notes", 0, records(30..31))
        .await
        .unwrap();
    // The first writer's checkpoint: four issues, two labels; then it went
    // on writing past it (issues 4 and 5, a note) before it was replaced.
    let keep = BTreeMap::from([("issues".to_owned(), 4), ("labels".to_owned(), 2)]);
    assert!(content.claim_generation(g, second, &keep).await.unwrap());
    assert!(
        !content.claim_generation(g, first, &none).await.unwrap(),
        "the older writer cannot take it back"
    );
    assert!(matches!(
        content
            .put_records(g, first, "issues", 4, records(90..92))
            .await,
        Err(Error::Conflict(_))
    ));
    let mut stats = content.relations(g).await.unwrap();
    stats.sort_by(|a, b| a.relation.cmp(&b.relation));
    let counts: Vec<(String, u64)> = stats
        .iter()
        .map(|s| (s.relation.clone(), s.records))
        .collect();
    assert_eq!(
        counts,
        vec![("issues".to_owned(), 4), ("labels".to_owned(), 2)]
    );
    content
        .put_records(g, second, "issues", 4, records(4..7))
        .await
        .unwrap();
    let issues = read_all(content, g, "issues", 0, u64::MAX, 100).await;
    assert_eq!(seqs(&issues), (0..7).collect::<Vec<u64>>());
    assert!(issues
        .iter()
        .zip(records(0..7))
        .all(|(got, sent)| got.json == sent));
    assert!(read_all(content, g, "notes", 0, u64::MAX, 10)
        .await
        .is_empty());
    // Claiming again as the same writer (a retried claim) keeps what it wrote.
    let keep = BTreeMap::from([("issues".to_owned(), 7), ("labels".to_owned(), 2)]);
    assert!(content.claim_generation(g, second, &keep).await.unwrap());
    assert_eq!(
        read_all(content, g, "issues", 0, u64::MAX, 100).await.len(),
        7
    );
    // A cut that would split a batch is refused, not rounded.
    let inside = BTreeMap::from([("issues".to_owned(), 5)]);
    assert!(content
        .claim_generation(g, second + 1, &inside)
        .await
        .is_err());
    content.delete_content(g).await.unwrap();
}

pub async fn job_store(app: &App, _backend: Backend) {
    let jobs = &app.jobs;
    let job = Job::new(JobKind::Export, 7, 1);
    jobs.create_job(&job).await.unwrap();
    assert!(matches!(
        jobs.create_job(&job).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(jobs.job(&job.id).await.unwrap().as_ref(), Some(&job));
    assert_eq!(jobs.job("missing").await.unwrap(), None);
    assert_eq!(
        jobs.latest_job(7, JobKind::Export)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(job.id.clone())
    );
    assert_eq!(jobs.latest_job(7, JobKind::Import).await.unwrap(), None);
    assert_eq!(
        jobs.latest_finished_job(7, JobKind::Export).await.unwrap(),
        None
    );

    let started = jobs
        .transition(
            &job.id,
            When::status_in(&[JobStatus::Queued]),
            JobStatus::Started,
            JobUpdate::default(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.status, JobStatus::Started);
    assert!(jobs
        .transition(
            &job.id,
            When::status_in(&[JobStatus::Queued]),
            JobStatus::Started,
            JobUpdate::default()
        )
        .await
        .unwrap()
        .is_none());
    let mut counts = std::collections::BTreeMap::new();
    counts.insert(
        "issues".to_owned(),
        shared::domain::RelationCounts {
            read: 42,
            stored: 40,
            skipped: 2,
        },
    );
    // Only the run that holds the job records its progress.
    let other_run = When::OwnedBy(started.attempt + 1);
    assert!(!jobs
        .record_progress(&job.id, other_run, progress(7, None))
        .await
        .unwrap());
    assert!(jobs
        .record_progress(
            &job.id,
            When::OwnedBy(started.attempt),
            progress(42, Some(counts.clone()))
        )
        .await
        .unwrap());
    let progressed = jobs.job(&job.id).await.unwrap().unwrap();
    assert_eq!(
        (progressed.processed, progressed.relation_counts),
        (42, counts)
    );
    let finished = jobs
        .transition(
            &job.id,
            When::status_in(&[JobStatus::Started]),
            JobStatus::Finished,
            JobUpdate {
                archive_key: Some("k".into()),
                file_name: Some("f.tar.gz".into()),
                ..JobUpdate::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (finished.archive_key.as_deref(), finished.processed),
        (Some("k"), 42)
    );
    assert_eq!(
        jobs.latest_finished_job(7, JobKind::Export).await.unwrap(),
        Some(finished.clone())
    );
    // A finished job never goes back.
    assert!(jobs
        .transition(
            &job.id,
            When::status_in(&[JobStatus::Queued, JobStatus::Started]),
            JobStatus::Started,
            JobUpdate::default()
        )
        .await
        .unwrap()
        .is_none());
    assert!(!jobs
        .record_progress(&job.id, When::started(), progress(1, None))
        .await
        .unwrap());
    assert_eq!(jobs.job(&job.id).await.unwrap().unwrap().processed, 42);

    // Unfinished jobs not updated lately: the stale-job sweep's candidates.
    let later = shared::domain::now() + chrono::Duration::minutes(1);
    let stale_ids = || async {
        let stale = jobs.stale_jobs(later, 100).await.unwrap();
        stale.into_iter().map(|j| j.id).collect::<Vec<String>>()
    };
    let stale = stale_ids().await;
    assert!(!stale.contains(&job.id), "a finished job is never stale");
    let quiet = Job::new(JobKind::Import, 7, 1);
    jobs.create_job(&quiet).await.unwrap();
    let stale = stale_ids().await;
    assert!(stale.contains(&quiet.id), "{stale:?}");
    let earlier = shared::domain::now() - chrono::Duration::minutes(1);
    assert!(jobs.stale_jobs(earlier, 100).await.unwrap().is_empty());
    jobs.transition(
        &quiet.id,
        When::status_in(&[JobStatus::Queued]),
        JobStatus::Failed,
        JobUpdate::default(),
    )
    .await
    .unwrap();
    assert!(!stale_ids().await.contains(&quiet.id));

    // A project's jobs of a kind, newest first; numbers count up.
    let mut listed = Vec::new();
    for _ in 0..3 {
        let mut job = Job::new(JobKind::RelationImport, 9, 1);
        job.number = jobs.next_number("relation_import").await.unwrap();
        jobs.create_job(&job).await.unwrap();
        listed.push(job);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let numbers: Vec<u64> = listed.iter().map(|j| j.number).collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    let newest_first: Vec<String> = listed.iter().rev().map(|j| j.id.clone()).collect();
    let found: Vec<String> = jobs
        .project_jobs(9, JobKind::RelationImport, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(found, newest_first);
    let older: Vec<String> = jobs
        .project_jobs(9, JobKind::RelationImport, 1, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(older, newest_first[1..]);
    assert_eq!(
        jobs.project_jobs(9, JobKind::RelationImport, 0, 2)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(jobs
        .project_jobs(9, JobKind::Import, 0, 10)
        .await
        .unwrap()
        .is_empty());

    // Two workers claiming one job: exactly one wins.
    let contested = Job::new(JobKind::Import, 8, 1);
    jobs.create_job(&contested).await.unwrap();
    let claim = || {
        jobs.transition(
            &contested.id,
            When::status_in(&[JobStatus::Queued]),
            JobStatus::Started,
            JobUpdate::default(),
        )
    };
    let (a, b) = tokio::join!(claim(), claim());
    assert_eq!(
        [a.unwrap().is_some(), b.unwrap().is_some()]
            .iter()
            .filter(|w| **w)
            .count(),
        1
    );

    relation_export_parts(app).await;
}

fn part(project_id: u64, relation: &str, batch: Option<u32>, run: &str) -> RelationExportPart {
    RelationExportPart {
        project_id,
        relation: relation.into(),
        batch,
        run_id: run.into(),
        content: Some("g".into()),
        status: JobStatus::Queued,
        error: None,
        batched: batch.is_some(),
        batches_count: 2,
        objects_count: 3,
        first_seq: 0,
        exported: 0,
        archive_key: None,
        updated_at: now(),
    }
}

async fn relation_export_parts(app: &App) {
    let jobs = &app.jobs;
    let keys = |parts: Vec<RelationExportPart>| -> Vec<(String, Option<u32>, String)> {
        parts
            .into_iter()
            .map(|p| (p.relation, p.batch, p.run_id))
            .collect()
    };
    jobs.replace_relation_export(10, vec![part(10, "labels", None, "other")])
        .await
        .unwrap();
    jobs.replace_relation_export(
        9,
        vec![
            part(9, "labels", None, "r1"),
            part(9, "issues", Some(2), "r1"),
            part(9, "issues", None, "r1"),
            part(9, "issues", Some(1), "r1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        keys(jobs.relation_export_parts(9).await.unwrap()),
        vec![
            ("issues".into(), None, "r1".into()),
            ("issues".into(), Some(1), "r1".into()),
            ("issues".into(), Some(2), "r1".into()),
            ("labels".into(), None, "r1".into()),
        ]
    );
    // From one part on, a few at a time, never into another project's.
    assert_eq!(
        keys(
            jobs.relation_export_parts_from(9, "issues", Some(1), 2)
                .await
                .unwrap()
        ),
        vec![
            ("issues".into(), Some(1), "r1".into()),
            ("issues".into(), Some(2), "r1".into()),
        ]
    );
    assert_eq!(
        keys(
            jobs.relation_export_parts_from(9, "issues", Some(2), 10)
                .await
                .unwrap()
        ),
        vec![
            ("issues".into(), Some(2), "r1".into()),
            ("labels".into(), None, "r1".into()),
        ]
    );
    assert_eq!(
        keys(
            jobs.relation_export_parts_from(9, "issues", None, 1)
                .await
                .unwrap()
        ),
        vec![("issues".into(), None, "r1".into())]
    );
    assert!(jobs
        .relation_export_parts_from(9, "milestones", None, 10)
        .await
        .unwrap()
        .is_empty());
    let move_part = |run: &'static str, from: &'static [JobStatus], to, update| {
        jobs.transition_relation_export_part(9, "issues", Some(2), run, from, to, update)
    };
    assert!(move_part(
        "r1",
        &[JobStatus::Queued],
        JobStatus::Started,
        JobUpdate::default()
    )
    .await
    .unwrap()
    .is_some());
    assert!(move_part(
        "r1",
        &[JobStatus::Queued],
        JobStatus::Started,
        JobUpdate::default()
    )
    .await
    .unwrap()
    .is_none());
    assert!(move_part(
        "r0",
        &[JobStatus::Started],
        JobStatus::Finished,
        JobUpdate::default()
    )
    .await
    .unwrap()
    .is_none());
    let done = move_part(
        "r1",
        &[JobStatus::Started],
        JobStatus::Finished,
        JobUpdate {
            archive_key: Some("k".into()),
            processed: Some(3),
            ..JobUpdate::default()
        },
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (done.status, done.exported, done.archive_key.as_deref()),
        (JobStatus::Finished, 3, Some("k"))
    );
    assert_eq!(jobs.relation_export_parts(9).await.unwrap()[2], done);

    // A new run replaces the old one whole; the old run's messages change nothing.
    jobs.replace_relation_export(9, vec![part(9, "labels", None, "r2")])
        .await
        .unwrap();
    assert_eq!(
        keys(jobs.relation_export_parts(9).await.unwrap()),
        vec![("labels".into(), None, "r2".into())]
    );
    assert!(jobs
        .transition_relation_export_part(
            9,
            "labels",
            None,
            "r1",
            &[JobStatus::Queued],
            JobStatus::Started,
            JobUpdate::default()
        )
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        keys(jobs.relation_export_parts(10).await.unwrap()),
        vec![("labels".into(), None, "other".into())]
    );
    assert!(jobs.relation_export_parts(11).await.unwrap().is_empty());
}

fn chunks(total: usize, chunk: usize) -> Vec<io::Result<Bytes>> {
    (0..total.div_ceil(chunk))
        .map(|i| {
            let len = chunk.min(total - i * chunk);
            Ok(Bytes::from(vec![(i % 251) as u8; len]))
        })
        .collect()
}

/// Download URLs are fetched on moto; an embedded store's URLs need the
/// local server, and the end-to-end tests fetch those.
pub async fn blob_store(app: &App, backend: Backend) {
    let blobs = &app.blobs;
    blobs
        .put("a/small", stream::from_bytes("hello"))
        .await
        .unwrap();
    assert_eq!(
        stream::collect(blobs.get("a/small").await.unwrap())
            .await
            .unwrap(),
        b"hello"
    );
    assert_eq!(
        blobs
            .put("a/empty", stream::from_bytes(Bytes::new()))
            .await
            .unwrap(),
        0
    );

    // Bigger than one multipart part, streamed in small chunks.
    let total = 20 * 1024 * 1024 + 123;
    let size = blobs
        .put(
            "a/large",
            Box::pin(futures::stream::iter(chunks(total, 64 * 1024))),
        )
        .await
        .unwrap();
    assert_eq!(size, total as u64);
    let back = stream::collect(blobs.get("a/large").await.unwrap())
        .await
        .unwrap();
    let expected: Vec<u8> = chunks(total, 64 * 1024)
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert!(back == expected, "large blob differs");
    // The same bytes through a blocking reader, read on a thread of its own.
    let reader = blobs.reader("a/large").await.unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut { reader }, &mut bytes).map(|_| bytes)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(read == expected, "large blob read blocking differs");
    assert!(matches!(
        blobs.reader("a/missing").await,
        Err(Error::NotFound(_))
    ));

    // A failing stream leaves nothing behind, small or large.
    for size in [10usize, 9 * 1024 * 1024] {
        let mut failing = chunks(size, 1024 * 1024);
        failing.push(Err(io::Error::other("producer failed")));
        assert!(blobs
            .put("a/broken", Box::pin(futures::stream::iter(failing)))
            .await
            .is_err());
        assert!(matches!(
            blobs.get("a/broken").await,
            Err(Error::NotFound(_))
        ));
    }

    let listed = blobs.list("a/").await.unwrap();
    let keys: Vec<(&str, u64)> = listed.iter().map(|b| (b.key.as_str(), b.size)).collect();
    assert_eq!(
        keys,
        vec![("a/empty", 0), ("a/large", total as u64), ("a/small", 5)]
    );
    assert!(blobs.list("b/").await.unwrap().is_empty());

    let url = blobs
        .download_url(
            "a/small",
            "x_export.tar.gz",
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(url.starts_with("http"), "{url}");
    if backend == Backend::AwsOnMoto {
        let response = reqwest::get(&url).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(disposition.contains("x_export.tar.gz"), "{disposition}");
        assert_eq!(response.bytes().await.unwrap(), "hello");
    }

    blobs.delete_prefix("a/").await.unwrap();
    assert!(blobs.list("a/").await.unwrap().is_empty());
    assert!(matches!(
        blobs.get("a/small").await,
        Err(Error::NotFound(_))
    ));

    blobs_in_parts(app, backend).await;
}

/// A blob written in parts by separate writers: each part as large as S3
/// wants it (every one but the last at least `min_part_bytes`), stored in
/// any order, some twice; nothing visible until completed.
async fn blobs_in_parts(app: &App, backend: Backend) {
    let blobs = &app.blobs;
    let min = blobs.min_part_bytes() as usize;
    assert_eq!(
        min,
        if backend == Backend::AwsOnMoto {
            5 << 20
        } else {
            0
        }
    );
    let sizes = [min.max(1000) + 1, min.max(1000), 10];
    let part = |n: usize| Bytes::from(vec![b'a' + n as u8; sizes[n]]);
    let key = "p/archive.tar.gz";
    let upload = blobs.start_parts(key).await.unwrap();
    let mut stored = Vec::new();
    for n in [2, 0, 1, 1] {
        let body = Box::pin(futures::stream::iter(
            part(n)
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        ));
        let done = blobs
            .put_part(key, &upload, n as u32 + 1, body)
            .await
            .unwrap();
        assert_eq!((done.number, done.size), (n as u32 + 1, sizes[n] as u64));
        stored.retain(|p: &shared::ports::StoredPart| p.number != done.number);
        stored.push(done);
    }
    assert!(blobs.list("p/").await.unwrap().is_empty(), "visible early");
    let size = blobs.complete_parts(key, &upload, &stored).await.unwrap();
    let expected: Vec<u8> = (0..3).flat_map(|n| part(n).to_vec()).collect();
    assert_eq!(size, expected.len() as u64);
    let back = stream::collect(blobs.get(key).await.unwrap())
        .await
        .unwrap();
    assert!(back == expected, "joined parts differ");
    // Completed again (a retry that lost the first answer): no error.
    assert_eq!(
        blobs.complete_parts(key, &upload, &stored).await.unwrap(),
        size
    );
    assert_eq!(blobs.list("p/").await.unwrap().len(), 1);

    // An aborted upload leaves nothing, and takes no more parts.
    let aborted = blobs.start_parts("p/other").await.unwrap();
    blobs
        .put_part("p/other", &aborted, 1, stream::from_bytes("x"))
        .await
        .unwrap();
    blobs.abort_parts("p/other", &aborted).await.unwrap();
    blobs.abort_parts("p/other", &aborted).await.unwrap();
    assert!(blobs
        .put_part("p/other", &aborted, 2, stream::from_bytes("y"))
        .await
        .is_err());
    assert_eq!(blobs.list("p/").await.unwrap().len(), 1);
    blobs.delete_prefix("p/").await.unwrap();
}

pub async fn queue(app: &App, _backend: Backend) {
    let queue = &app.queue;
    let visibility = std::time::Duration::from_secs(30);
    let messages: Vec<Message> = (0..12)
        .map(|i| Message {
            kind: JobKind::Export,
            job_id: format!("job-{i}"),
            project_id: i,
            relation: None,
            batch: None,
        })
        .collect();
    queue.send(&messages).await.unwrap();
    let mut received = Vec::new();
    for _ in 0..50 {
        let batch = queue.receive(10, visibility).await.unwrap();
        assert!(batch.len() <= 10);
        received.extend(batch);
        if received.len() == messages.len() {
            break;
        }
    }
    let mut ids: Vec<String> = received.iter().map(|d| d.message.job_id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> = messages.iter().map(|m| m.job_id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert!(received.iter().all(|d| d.receive_count == 1));
    for delivery in &received {
        queue.ack(&delivery.receipt).await.unwrap();
    }
    assert!(queue.receive(10, visibility).await.unwrap().is_empty());

    // Retried: visible again, delivered a second time.
    queue.send(&messages[..1]).await.unwrap();
    let first = queue.receive(1, visibility).await.unwrap().remove(0);
    assert!(
        queue.receive(1, visibility).await.unwrap().is_empty(),
        "hidden while in flight"
    );
    queue
        .retry(&first.receipt, std::time::Duration::ZERO)
        .await
        .unwrap();
    let again = queue.receive(1, visibility).await.unwrap().remove(0);
    assert_eq!(
        (again.message.clone(), again.receive_count),
        (messages[0].clone(), 2)
    );
    queue.ack(&again.receipt).await.unwrap();

    // Sent for later: hidden until its delay has passed, then delivered.
    let delay = std::time::Duration::from_secs(1);
    let sent = std::time::Instant::now();
    queue.send_later(&messages[1..2], delay).await.unwrap();
    assert!(
        queue.receive(1, visibility).await.unwrap().is_empty(),
        "hidden before its delay"
    );
    let later = loop {
        let mut delivered = queue.receive(1, visibility).await.unwrap();
        if let Some(delivery) = delivered.pop() {
            break delivery;
        }
        assert!(sent.elapsed() < delay * 10, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(sent.elapsed() >= delay, "delivered before its delay");
    assert_eq!(later.message, messages[1]);
    queue.ack(&later.receipt).await.unwrap();
}

fn progress(
    processed: u64,
    counts: Option<std::collections::BTreeMap<String, shared::domain::RelationCounts>>,
) -> JobUpdate {
    JobUpdate {
        processed: Some(processed),
        relation_counts: counts,
        ..JobUpdate::default()
    }
}

/// A project's job history stays at `JOB_HISTORY` of each kind, however
/// many jobs it runs; what a pointer or the project's content names stays.
pub async fn job_history(app: &App, _backend: Backend) {
    use shared::service::history::{self, JOB_HISTORY};
    let owner = app
        .users
        .create_user("owner", "Owner", false)
        .await
        .unwrap();
    let namespace = app.users.namespace(owner.id).await.unwrap().unwrap();
    let project = app
        .projects
        .create_project(NewProject {
            namespace,
            path: "busy".into(),
            name: "busy".into(),
            description: None,
            owner_id: owner.id,
        })
        .await
        .unwrap();
    let end = |job: &Job, to: JobStatus| {
        let id = job.id.clone();
        async move {
            app.jobs
                .transition(
                    &id,
                    When::status_in(&[JobStatus::Queued]),
                    to,
                    JobUpdate::default(),
                )
                .await
                .unwrap()
                .unwrap()
        }
    };
    let mut created = Vec::new();
    for n in 0..JOB_HISTORY + 40 {
        let job = Job::new(JobKind::Import, project.id, owner.id);
        history::create_job(app, &job).await.unwrap();
        match n {
            // The oldest: its content is what the project shows.
            0 => {
                end(&job, JobStatus::Finished).await;
                let mut shown = project.clone();
                shown.content = Some(job.generation(1));
                assert!(app.projects.switch_content(&shown).await.unwrap());
            }
            // Still running: never forgotten.
            1 => {}
            // The newest finished one: the status answers read it.
            2 => {
                end(&job, JobStatus::Finished).await;
            }
            _ => {
                end(&job, JobStatus::Failed).await;
            }
        }
        created.push(job);
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let kept = app
        .jobs
        .project_jobs(project.id, JobKind::Import, 0, 1000)
        .await
        .unwrap();
    assert_eq!(
        kept.len(),
        JOB_HISTORY + 3,
        "the newest and three protected"
    );
    for protected in &created[..3] {
        assert!(
            kept.iter().any(|j| j.id == protected.id),
            "{}",
            protected.id
        );
    }
    for forgotten in &created[3..40] {
        assert_eq!(app.jobs.job(&forgotten.id).await.unwrap(), None);
    }
    assert_eq!(
        app.jobs
            .latest_finished_job(project.id, JobKind::Import)
            .await
            .unwrap()
            .map(|j| j.id),
        Some(created[2].id.clone())
    );
    // Another kind keeps its own history.
    let export = Job::new(JobKind::Export, project.id, owner.id);
    history::create_job(app, &export).await.unwrap();
    assert_eq!(
        app.jobs
            .project_jobs(project.id, JobKind::Export, 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Migrations by direct transfer: stored whole per user, listed oldest
/// first, replaced whole on cancel, never seen by another user.
pub async fn bulk_imports(app: &App, _backend: Backend) {
    use shared::domain::{BulkEntity, BulkImport};
    let at = now();
    let migration = |id: u64, user_id: u64| BulkImport {
        id,
        user_id,
        source_url: "https://gitlab.example.com".into(),
        entities: vec![BulkEntity {
            id: id * 10,
            job_id: format!("job-{id}"),
            project_id: id,
            source_full_path: "group/project".into(),
            destination_slug: "copy".into(),
            destination_namespace: "root".into(),
            migrate_projects: true,
            migrate_memberships: true,
            created_at: at,
        }],
        canceled: false,
        created_at: at,
        updated_at: at,
    };
    assert_eq!(app.jobs.bulk_import(1, 1).await.unwrap(), None);
    assert!(app.jobs.bulk_imports(1).await.unwrap().is_empty());
    // Ids past 9 sort as numbers, not as text.
    for (id, user) in [(10, 1), (2, 1), (3, 2)] {
        app.jobs
            .put_bulk_import(&migration(id, user))
            .await
            .unwrap();
    }
    let first = migration(2, 1);
    assert_eq!(
        app.jobs.bulk_import(1, 2).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        app.jobs.bulk_import(2, 2).await.unwrap(),
        None,
        "another user's"
    );
    let ids: Vec<u64> = app
        .jobs
        .bulk_imports(1)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, [2, 10]);
    let canceled = BulkImport {
        canceled: true,
        ..first
    };
    app.jobs.put_bulk_import(&canceled).await.unwrap();
    assert_eq!(app.jobs.bulk_import(1, 2).await.unwrap(), Some(canceled));
    assert_eq!(app.jobs.bulk_imports(2).await.unwrap().len(), 1);
}
