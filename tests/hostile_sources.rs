//! A migration's source is any URL a user names: on a deployment, anyone's
//! server. Whatever it answers (bodies of any size, tar files built to
//! exhaust memory, thousands of batches, a byte every second, the token
//! echoed back) costs this server a bounded amount and fails only the
//! entity that named it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use e2e::migration::*;
use e2e::*;
use serde_json::{json, Value};

const SOURCE_TOKEN: &str = "glpat-hostile-source-token-42";
const MIB: u64 = 1024 * 1024;

/// The text of an entity's failures.
fn failure_text(entity: &Value) -> String {
    entity["failures"]
        .as_array()
        .map(|failures| {
            failures
                .iter()
                .map(|f| {
                    f["exception_message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

/// Peak RSS grows by no more than `allowed` bytes past `idle`.
fn assert_memory_bounded(server: &Server, idle: u64, allowed: u64, what: &str) {
    let peak = server.peak_rss();
    eprintln!(
        "{what}: peak RSS {} MiB (idle {} MiB)",
        peak / MIB,
        idle / MIB
    );
    assert!(
        peak < idle + allowed,
        "{what}: peak RSS {} MiB, idle {} MiB",
        peak / MIB,
        idle / MIB
    );
}

#[test]
fn answers_of_any_size_are_read_only_as_far_as_needed() {
    let destination = destination();
    let idle = destination.peak_rss();

    // A refusal with a 512 MiB body: a few KiB of it are read.
    let mut refusing = FakeSource::of_fixture(SOURCE_TOKEN);
    refusing.huge_refusal = Some(512 * MIB);
    let (url, _) = refusing.serve();
    let (_, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "refused"),
    );
    assert_eq!(entity["status"], "failed");
    assert_eq!(
        failure_text(&entity),
        "Check that the source instance base URL and the personal access token meet the necessary requirements."
    );

    // A relations export status of 512 MiB: refused past its cap.
    let mut bloated = FakeSource::of_fixture(SOURCE_TOKEN);
    bloated.huge_status = Some(512 * MIB);
    let (url, _) = bloated.serve();
    let (_, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "bloated"),
    );
    assert_eq!(entity["status"], "failed");
    assert!(
        failure_text(&entity).contains("the source's export status is larger than 8388608 bytes"),
        "{entity}"
    );
    assert_memory_bounded(&destination, idle, 100 * MIB, "answers of 512 MiB");
}

#[test]
fn a_sources_tar_file_passes_the_import_checks() {
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.uploads_long_name = Some(256 * MIB);
    let (url, _) = fake.serve();
    let destination = destination();
    let idle = destination.peak_rss();
    let (migration, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "long-name"),
    );
    assert_eq!(migration["status"], "failed", "{entity}");
    assert_eq!(entity["status"], "failed");
    let text = failure_text(&entity);
    assert!(text.contains("a file of the source is refused"), "{text}");
    assert!(text.contains("extension header"), "{text}");
    assert_memory_bounded(&destination, idle, 100 * MIB, "a 256 MiB long name");
    // Nothing is left once the files still on their way when it failed
    // have landed and found it failed.
    let uploads = destination.data_dir.join("blobs/imports");
    let empty = || std::fs::read_dir(&uploads).map_or(true, |mut d| d.next().is_none());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(empty(), "{:?}", walk_dir(&uploads));
}

fn walk_dir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk_dir(&path));
        }
        found.push(path);
    }
    found
}

#[test]
fn a_source_claiming_many_batches_waits_its_turn() {
    const BATCHES: u32 = 300;
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.issue_batches = Some(BATCHES);
    let (url, source) = fake.serve();
    let destination = destination();
    let created = start_migration(
        &destination,
        ROOT_TOKEN,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "batched"),
    );
    assert_eq!(created.status(), 201);
    let migration_id = created.json::<Value>().unwrap()["id"].as_u64().unwrap();
    // Once its files are on their way, another user's import is not
    // behind all of them: it ends while most are still to come.
    while source.downloads.load(Ordering::SeqCst) < 5 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, bob) = destination.create_user("bob");
    let small = tar_gz(&[("VERSION", b"0.2.4"), ("tree/project.json", b"{}")]);
    let imported = destination.import_and_wait(&bob, small, &[("path", "small")]);
    assert_eq!(imported["import_status"], "finished");
    let downloaded = source.downloads.load(Ordering::SeqCst);
    eprintln!("another user's import ended after {downloaded} of {BATCHES} downloads");
    assert!(
        downloaded < BATCHES as usize / 2,
        "{downloaded} downloads before it"
    );
    let migration = wait_migration(&destination, ROOT_TOKEN, migration_id);
    assert_eq!(migration["status"], "finished", "{migration}");
    let entities: Vec<Value> = destination
        .get(
            Some(ROOT_TOKEN),
            &format!("/bulk_imports/{migration_id}/entities"),
        )
        .json()
        .unwrap();
    let per_batch = fixture_relations("complex")["issues"].len() as u64;
    assert_eq!(
        entities[0]["stats"]["issues"]["imported"],
        json!(per_batch * BATCHES as u64)
    );

    // A claim past what a migration takes is refused before any download.
    let mut claiming = FakeSource::of_fixture(SOURCE_TOKEN);
    claiming.issue_batches = Some(200_000);
    let (url, claimed) = claiming.serve();
    let (_, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "claimed"),
    );
    assert_eq!(entity["status"], "failed");
    assert!(
        failure_text(&entity).contains("more than the 100000 a migration takes"),
        "{entity}"
    );
    assert_eq!(claimed.downloads.load(Ordering::SeqCst), 0);
}

#[test]
fn a_trickling_source_does_not_hold_the_workers() {
    let destination =
        Server::start_with(&["--allow-local-requests", "--remote-metadata-timeout", "2"]);
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.trickles = true;
    let (url, source) = fake.serve();
    // Two entities, one for each of the server's two workers.
    let mut body = migration_of(&url, SOURCE_TOKEN, "group/project", "slow-a");
    let mut second = body["entities"][0].clone();
    second["destination_slug"] = json!("slow-b");
    body["entities"].as_array_mut().unwrap().push(second);
    let created = start_migration(&destination, ROOT_TOKEN, &body);
    assert_eq!(created.status(), 201);
    // Both workers are reading the trickle.
    while source.requests.load(Ordering::SeqCst) < 4 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    // Another user's import still gets a worker.
    let (_, bob) = destination.create_user("bob");
    let started = Instant::now();
    let small = tar_gz(&[("VERSION", b"0.2.4"), ("tree/project.json", b"{}")]);
    let imported = destination.import_and_wait(&bob, small, &[("path", "small")]);
    assert_eq!(imported["import_status"], "finished");
    eprintln!(
        "another user's import ended {:?} after it started",
        started.elapsed()
    );
}

#[test]
fn the_source_token_never_shows_whatever_the_source_echoes() {
    let destination = destination();
    let mut echoing = FakeSource::of_fixture(SOURCE_TOKEN);
    echoing.echoes_token = true;
    let (url, _) = echoing.serve();
    let (_, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "echoed"),
    );
    assert_eq!(entity["status"], "failed");
    let text = failure_text(&entity);
    assert!(text.contains("Unsuccessful response 403"), "{text}");
    assert!(text.contains("Authorization: Bearer [FILTERED]"), "{text}");

    let mut reporting = FakeSource::of_fixture(SOURCE_TOKEN);
    reporting.failing_relation = Some("milestones".into());
    reporting.echoes_token_in_status = true;
    let (url, _) = reporting.serve();
    let mut body = migration_of(&url, SOURCE_TOKEN, "group/project", "reported");
    // Only the failed relation fails: the members stay behind.
    body["entities"][0]["migrate_memberships"] = serde_json::json!(false);
    let (_, entity) = migrate(&destination, &body);
    assert_eq!(entity["status"], "finished");
    assert_eq!(
        failure_text(&entity),
        "Export from source instance failed: boom: Bearer [FILTERED]"
    );
    // Nowhere in what the API shows, the token's start included.
    let shown = destination
        .get(Some(ROOT_TOKEN), "/bulk_imports/entities")
        .text()
        .unwrap();
    assert!(!shown.contains(&SOURCE_TOKEN[..8]), "{shown}");
}
