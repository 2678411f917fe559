//! Migration by direct transfer (`/bulk_imports`): a project pulled from
//! another instance through its relations export API. The source is either
//! a second local server (the real thing, end to end) or a stand-in GitLab
//! served here, which can be made to fail in the ways a real one does.

use std::sync::atomic::Ordering;
use std::time::Duration;

use e2e::migration::*;
use e2e::*;
use serde_json::{json, Value};

#[test]
fn a_project_migrates_from_another_instance_record_for_record() {
    let source = Server::start();
    let (_, alice) = source.create_user("alice");
    let imported =
        source.import_and_wait(&alice, fixture_archive("complex"), &[("path", "origin")]);
    assert_eq!(imported["import_status"], "finished");
    let source_id = imported["id"].as_u64().unwrap();

    let destination = destination();
    // Three of the source's four members have a user here.
    let users: std::collections::BTreeMap<&str, u64> = ["bernard_willms", "saul_will", "user4"]
        .into_iter()
        .map(|username| (username, destination.create_user(username).0))
        .collect();
    let body = migration_of(&source.base, &alice, "alice/origin", "migrated");
    let (migration, entity) = migrate(&destination, &body);
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(entity["status"], "finished");
    assert_eq!(entity["entity_type"], "project");
    assert_eq!(entity["destination_full_path"], "root/migrated");
    assert_eq!(entity["stats"]["issues"]["imported"], 12);
    assert_eq!(entity["stats"]["project_members"]["imported"], 3);
    // The fourth is the entity's one failure, saying why.
    assert_eq!(migration["has_failures"], true);
    let failures = entity["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["relation"], "project_members");
    assert_eq!(
        failures[0]["exception_message"],
        "emmet.schamberger: no user of this instance has this username"
    );
    let text = destination
        .get(Some(ROOT_TOKEN), "/bulk_imports/entities")
        .text()
        .unwrap();
    assert!(!text.contains(&alice), "the source token is never shown");

    let project_id = entity["project_id"].as_u64().unwrap();
    let (_, from) = source.export_and_download(&alice, source_id);
    let (_, to) = destination.export_and_download(ROOT_TOKEN, project_id);
    let (mut from, mut to) = (read_archive(&from), read_archive(&to));
    // Members name users of their instance: they are equal as the users
    // they name (by username), with their access and dates.
    let member = |record: &Value| {
        (
            record["user"]["username"].as_str().unwrap().to_owned(),
            record["access_level"].clone(),
            record["created_at"].clone(),
            record.get("expires_at").cloned().unwrap_or(Value::Null),
        )
    };
    let source_members: Vec<_> = from
        .relations
        .remove("project_members")
        .unwrap()
        .iter()
        .map(member)
        .collect();
    let kept: Vec<_> = to
        .relations
        .remove("project_members")
        .unwrap()
        .iter()
        .map(member)
        .collect();
    let expected: Vec<_> = source_members
        .into_iter()
        .filter(|(username, ..)| username != "emmet.schamberger")
        .collect();
    assert_eq!(kept, expected);
    assert!(!from.relations.is_empty());
    assert_eq!(to.relations, from.relations);
    assert_eq!(to.attributes, from.attributes);

    // Each kept member names the user of this instance.
    let listed: Value = destination
        .get(
            Some(ROOT_TOKEN),
            &format!("/projects/{project_id}/members/all"),
        )
        .json()
        .unwrap();
    let listed: std::collections::BTreeMap<&str, u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["username"].as_str().unwrap(), m["id"].as_u64().unwrap()))
        .collect();
    assert_eq!(listed, users);
}

/// The members API answers as GitLab's: its `Member` entities, paginated,
/// with GitLab's status codes.
#[test]
fn the_members_api_answers_as_gitlabs() {
    let server = Server::start();
    let (_, alice) = server.create_user("alice");
    let imported = server.import_and_wait(&alice, fixture_archive("complex"), &[("path", "team")]);
    let id = imported["id"].as_u64().unwrap();
    for path in [
        format!("/projects/{id}/members"),
        format!("/projects/{id}/members/all"),
    ] {
        let response = server.get(Some(&alice), &format!("{path}?per_page=3"));
        assert_eq!(response.status(), 200);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("x-total"), "4");
        assert_eq!(header("x-next-page"), "2");
        assert_eq!(header("x-per-page"), "3");
        let first: Value = response.json().unwrap();
        assert_eq!(first.as_array().unwrap().len(), 3);
        assert_eq!(first[0]["id"], 16);
        assert_eq!(first[0]["username"], "bernard_willms");
        assert_eq!(first[0]["access_level"], 40);
        assert_eq!(first[0]["state"], "active");
        assert_eq!(first[0]["membership_state"], "active");
        assert_eq!(first[0]["expires_at"], Value::Null);
        assert_eq!(first[0]["created_at"], "2016-06-14T15:02:03.834Z");
        assert!(first[0]["web_url"]
            .as_str()
            .unwrap()
            .ends_with("/bernard_willms"));
        let rest: Value = server
            .get(Some(&alice), &format!("{path}?per_page=3&page=2"))
            .json()
            .unwrap();
        assert_eq!(rest.as_array().unwrap().len(), 1);
        assert_eq!(rest[0]["username"], "user4");
        let past: Value = server
            .get(Some(&alice), &format!("{path}?page=9"))
            .json()
            .unwrap();
        assert_eq!(past, json!([]));
        assert_eq!(server.get(None, &path).status(), 401);
        let (_, bob) = server.create_user(&format!("bob{}", path.len()));
        let hidden = server.get(Some(&bob), &path);
        assert_eq!(hidden.status(), 404);
        assert_eq!(
            hidden.json::<Value>().unwrap(),
            json!({"message": "404 Project Not Found"})
        );
        assert_eq!(
            server.get(Some(&alice), &format!("{path}?page=x")).status(),
            400
        );
    }
}

/// Without `migrate_memberships` the members stay behind, and nothing
/// fails for them.
#[test]
fn a_migration_without_memberships_brings_no_members() {
    let source = Server::start();
    let (_, alice) = source.create_user("alice");
    source.import_and_wait(&alice, fixture_archive("complex"), &[("path", "solo")]);
    let destination = destination();
    let mut body = migration_of(&source.base, &alice, "alice/solo", "solo");
    body["entities"][0]["migrate_memberships"] = json!(false);
    let (migration, entity) = migrate(&destination, &body);
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(migration["has_failures"], false);
    assert_eq!(entity["failures"], json!([]));
    assert_eq!(entity["stats"].get("project_members"), None);
    let project_id = entity["project_id"].as_u64().unwrap();
    let listed: Value = destination
        .get(Some(ROOT_TOKEN), &format!("/projects/{project_id}/members"))
        .json()
        .unwrap();
    assert_eq!(listed, json!([]));
}

/// A migration bigger than one invocation: the destination's import reads
/// the staged files (never put together into an archive first) across many
/// invocations (a budget of zero stops each run soon after its first stored
/// record, inside a relation's batches or between files) and ends equal to
/// the source, records and files.
#[test]
fn a_migration_bigger_than_an_invocation_continues_and_ends_equal() {
    let source = Server::start();
    let (_, alice) = source.create_user("alice");
    let archive = synthetic_archive(ISSUES_PAST_ONE_RUN);
    let imported = source.import_and_wait(&alice, archive, &[("path", "big")]);
    assert_eq!(imported["import_status"], "finished");
    let source_id = imported["id"].as_u64().unwrap();

    let destination = Server::start_with(&["--allow-local-requests", "--invocation-budget", "0"]);
    let body = migration_of(&source.base, &alice, "alice/big", "big");
    let (migration, entity) = migrate(&destination, &body);
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(entity["failures"], json!([]));
    let project_id = entity["project_id"].as_u64().unwrap();
    let import: Value = destination
        .get(Some(ROOT_TOKEN), &format!("/projects/{project_id}/import"))
        .json()
        .unwrap();
    let progress = &import["import_progress"];
    assert!(progress["invocations"].as_u64().unwrap() >= 3, "{progress}");
    assert_eq!(
        progress["archive_bytes_read"], progress["archive_bytes"],
        "{progress}"
    );

    let (_, from) = source.export_and_download(&alice, source_id);
    let (_, to) = destination.export_and_download(ROOT_TOKEN, project_id);
    let (from, to) = (read_archive(&from), read_archive(&to));
    let mut expected = from.relations.clone();
    expected.remove("project_members");
    assert_eq!(to.relations["issues"].len(), ISSUES_PAST_ONE_RUN);
    assert_eq!(to.relations, expected);
    assert_eq!(to.attributes, from.attributes);
    assert!(!from.files.is_empty());
    assert_eq!(to.files, from.files);
}

const SOURCE_TOKEN: &str = "glpat-source-token-0123456789";

/// The `repository` file of GitLab's relations export holding `bundle`.
fn repository_of(bundle: &[u8]) -> Vec<u8> {
    let mut repository = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(bundle.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    repository
        .append_data(&mut header, "project.bundle", bundle)
        .unwrap();
    gzip(&repository.into_inner().unwrap())
}

/// Migrates the fake source's project into a destination that stops every
/// run as soon as it may; the destination and the finished entity.
fn migrate_in_short_runs(url: &str) -> (Server, Value) {
    let destination = Server::start_with(&["--allow-local-requests", "--invocation-budget", "0"]);
    let mut body = migration_of(url, SOURCE_TOKEN, "group/project", "copy");
    body["entities"][0]["migrate_memberships"] = json!(false);
    let (migration, entity) = migrate(&destination, &body);
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(entity["failures"], json!([]));
    (destination, entity)
}

/// The bundle a migrated project's export holds.
fn migrated_bundle(destination: &Server, entity: &Value) -> Vec<u8> {
    let project_id = entity["project_id"].as_u64().unwrap();
    let (_, exported) = destination.export_and_download(ROOT_TOKEN, project_id);
    read_archive(&exported).files["project.bundle"].clone()
}

/// Where each download of the fake source's `repository` started.
fn repository_starts(fake: &FakeSource) -> Vec<Option<u64>> {
    fake.downloaded
        .lock()
        .unwrap()
        .iter()
        .filter(|(relation, _)| relation == "repository")
        .map(|(_, start)| *start)
        .collect()
}

/// A repository bundle bigger than what a run stages: the destination stops
/// every run as soon as it may (after 4 MiB, where the read allows), so the
/// source's file comes over several runs. Each later run asks for the rest
/// of the file only, from the gzip access point the last one kept. A
/// source that ignores ranges sends the file whole again: that run drops
/// the bytes before the stop and reads the rest without stopping (each run
/// would otherwise read again all the runs before it). Either way the
/// bundle lands whole.
#[test]
fn a_file_bigger_than_a_run_is_downloaded_in_ranges_and_lands_whole() {
    let bundle = noise(20 * 1024 * 1024, 11);
    let repository = repository_of(&bundle);
    for honours_ranges in [true, false] {
        let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
        fake.files.insert("repository".into(), repository.clone());
        fake.honours_ranges = honours_ranges;
        let (url, fake) = fake.serve();
        let (destination, entity) = migrate_in_short_runs(&url);
        let starts = repository_starts(&fake);
        eprintln!(
            "{} compressed bytes, ranges honoured: {honours_ranges}, downloads from {starts:?}",
            repository.len()
        );
        assert_eq!(starts[0], None, "{starts:?}");
        let offsets: Vec<u64> = starts[1..].iter().map(|s| s.unwrap()).collect();
        if honours_ranges {
            assert!(starts.len() >= 3, "{starts:?}");
            assert!(
                offsets.windows(2).all(|w| w[0] < w[1]),
                "each run goes on further: {starts:?}"
            );
        } else {
            assert_eq!(starts.len(), 2, "{starts:?}");
        }
        assert!(*offsets.last().unwrap() < repository.len() as u64);
        assert!(
            migrated_bundle(&destination, &entity) == bundle,
            "the bundle changed (ranges honoured: {honours_ranges})"
        );
    }
}

/// The source exports the project again while a run is halfway through
/// its file: the next run finds a file of another size, drops what was
/// staged, and the retry stages the new file from its start. The
/// migration ends with the new file, whole.
#[test]
fn a_file_exported_again_between_runs_is_staged_again_from_its_start() {
    let first = noise(20 * 1024 * 1024, 11);
    let second = noise(20 * 1024 * 1024 + 4096, 12);
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.files
        .insert("repository".into(), repository_of(&first));
    fake.repository_exported_again = Some(repository_of(&second));
    fake.honours_ranges = true;
    let (url, fake) = fake.serve();
    let (destination, entity) = migrate_in_short_runs(&url);
    let starts = repository_starts(&fake);
    // First file from 0, a ranged run finding the other file, then the
    // other from 0 on.
    assert_eq!(&starts[..1], &[None], "{starts:?}");
    assert!(starts[1].is_some(), "{starts:?}");
    assert_eq!(starts[2], None, "{starts:?}");
    assert!(
        migrated_bundle(&destination, &entity) == second,
        "the migrated bundle is not the source's newest"
    );
}

#[test]
fn a_gitlab_source_with_file_relations_and_a_failing_relation() {
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.failing_relation = Some("milestones".into());
    // The source answers 503 for a while, then recovers.
    fake.unavailable_for = 4;
    let (url, _) = fake.serve();
    let destination = destination();
    // Every member of the source has a user here.
    for username in ["bernard_willms", "saul_will", "emmet.schamberger", "user4"] {
        destination.create_user(username);
    }
    let (migration, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "copy"),
    );
    assert_eq!(entity["stats"]["project_members"]["imported"], 4);
    // GitLab serves the wiki and the snippets' repositories over git only:
    // the entity says they stayed behind.
    assert_eq!(
        entity["not_migrated"],
        json!(["wiki", "snippet_repositories"])
    );
    // GitLab ends the entity finished when some relations failed, and
    // lists them.
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(migration["has_failures"], true);
    assert_eq!(entity["status"], "finished");
    assert_eq!(entity["has_failures"], true);
    let failures = &entity["failures"];
    assert_eq!(failures.as_array().unwrap().len(), 1, "{failures}");
    assert_eq!(failures[0]["relation"], "milestones");
    assert_eq!(
        failures[0]["exception_message"],
        "Export from source instance failed: boom"
    );
    let listed: Value = destination
        .get(
            Some(ROOT_TOKEN),
            &format!(
                "/bulk_imports/{}/entities/{}/failures",
                migration["id"], entity["id"]
            ),
        )
        .json()
        .unwrap();
    assert_eq!(&listed, failures);

    let project_id = entity["project_id"].as_u64().unwrap();
    let (_, exported) = destination.export_and_download(ROOT_TOKEN, project_id);
    let mut exported = read_archive(&exported);
    let mut expected = fixture_relations("complex");
    let members = |records: Vec<Value>| -> Vec<(Value, Value)> {
        let mut members: Vec<_> = records
            .iter()
            .map(|r| (r["user"]["username"].clone(), r["access_level"].clone()))
            .collect();
        members.sort_by_key(|m| m.0.to_string());
        members
    };
    assert_eq!(
        members(exported.relations.remove("project_members").unwrap()),
        members(expected.remove("project_members").unwrap())
    );
    expected.remove("milestones");
    assert_eq!(exported.relations, expected);
    assert_eq!(
        exported
            .files
            .get("uploads/0123abcd/image.png")
            .map(Vec::as_slice),
        Some(&b"image"[..])
    );
}

#[test]
fn a_wrong_token_or_a_missing_project_fails_the_migration_with_gitlabs_reason() {
    let (url, source) = FakeSource::of_fixture(SOURCE_TOKEN).serve();
    let destination = destination();
    let (migration, entity) = migrate(
        &destination,
        &migration_of(&url, "glpat-wrong", "group/project", "denied"),
    );
    assert_eq!(migration["status"], "failed");
    assert_eq!(migration["has_failures"], true);
    assert_eq!(entity["status"], "failed");
    assert_eq!(
        entity["failures"][0]["exception_message"],
        "Check that the source instance base URL and the personal access token meet the necessary requirements."
    );
    assert_eq!(source.downloads.load(Ordering::SeqCst), 0);
    // Nothing of it is kept: the project shows no content.
    let project_id = entity["project_id"].as_u64().unwrap();
    let (_, exported) = destination.export_and_download(ROOT_TOKEN, project_id);
    assert!(read_archive(&exported).relations.is_empty());

    let (_, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/missing", "missing"),
    );
    assert_eq!(entity["status"], "failed");
    assert_eq!(
        entity["failures"][0]["exception_message"],
        "Import failed. 'group/missing' not found."
    );
}

#[test]
fn a_source_that_goes_away_leaves_nothing_half_imported() {
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.vanishes = true;
    let (url, _) = fake.serve();
    let destination = destination();
    let (migration, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "vanished"),
    );
    assert_eq!(migration["status"], "failed", "{entity}");
    assert_eq!(entity["status"], "failed");
    let project_id = entity["project_id"].as_u64().unwrap();
    let (_, exported) = destination.export_and_download(ROOT_TOKEN, project_id);
    assert!(read_archive(&exported).relations.is_empty());
    // No staged download is left behind.
    let uploads = destination.data_dir.join("blobs/imports");
    let left: Vec<_> = walk(&uploads);
    assert!(left.is_empty(), "{left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|entry| {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Members no user matches are failures, listed one by one up to 100 and
/// then counted in one more (the failures live in the job's item, which
/// DynamoDB holds to 400 KB); every page of the source's members is read.
#[test]
fn many_unmatched_members_are_listed_up_to_a_bound() {
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.member_count = Some(250);
    let (url, _) = fake.serve();
    let destination = destination();
    destination.create_user("member-249");
    let (migration, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "crowded"),
    );
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(entity["stats"]["project_members"]["imported"], 1);
    let failures = entity["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 101);
    assert_eq!(
        failures[0]["exception_message"],
        "member-0: no user of this instance has this username"
    );
    assert_eq!(
        failures[100]["exception_message"],
        "149 more members are not kept, for the same reasons"
    );
}

/// A source that takes its time to export: no run holds its invocation
/// waiting (a budget of zero lets each poll once); the job is queued again
/// for a later poll until the export is done.
#[test]
fn a_slow_source_export_is_polled_by_later_runs() {
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.exporting_for_polls = 4;
    let (url, source) = fake.serve();
    let destination = Server::start_with(&["--allow-local-requests", "--invocation-budget", "0"]);
    for username in ["bernard_willms", "saul_will", "emmet.schamberger", "user4"] {
        destination.create_user(username);
    }
    let (migration, entity) = migrate(
        &destination,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "slow"),
    );
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(entity["failures"], json!([]));
    assert_eq!(entity["stats"]["issues"]["imported"], 12);
    // One poll a run, each run after the one before let go: five at least.
    assert!(source.status_polls.load(Ordering::SeqCst) >= 5);
}

#[test]
fn a_canceled_migration_ends_canceled_and_publishes_nothing() {
    let mut fake = FakeSource::of_fixture(SOURCE_TOKEN);
    fake.never_finishes = true;
    let (url, source) = fake.serve();
    let destination = destination();
    let created: Value = start_migration(
        &destination,
        ROOT_TOKEN,
        &migration_of(&url, SOURCE_TOKEN, "group/project", "canceled"),
    )
    .json()
    .unwrap();
    let id = created["id"].as_u64().unwrap();
    let canceled = destination.post(Some(ROOT_TOKEN), &format!("/bulk_imports/{id}/cancel"));
    assert_eq!(canceled.status(), 200);
    let canceled: Value = canceled.json().unwrap();
    assert_eq!(canceled["status"], "canceled");
    let entities: Vec<Value> = destination
        .get(Some(ROOT_TOKEN), &format!("/bulk_imports/{id}/entities"))
        .json()
        .unwrap();
    assert_eq!(entities[0]["status"], "canceled");
    let filtered: Vec<Value> = destination
        .get(Some(ROOT_TOKEN), "/bulk_imports?status=canceled")
        .json()
        .unwrap();
    assert_eq!(filtered.len(), 1);
    // The run at work stops waiting for the source and publishes nothing.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(source.downloads.load(Ordering::SeqCst), 0);
    let project_id = entities[0]["project_id"].as_u64().unwrap();
    let (_, exported) = destination.export_and_download(ROOT_TOKEN, project_id);
    assert!(read_archive(&exported).relations.is_empty());
}

#[test]
fn requests_are_checked_as_gitlab_checks_them() {
    let server = Server::start();
    let body = migration_of(
        "https://gitlab.example.com",
        SOURCE_TOKEN,
        "group/project",
        "copy",
    );
    let unauthenticated = client()
        .post(server.url("/bulk_imports"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let missing: Value = start_migration(&server, ROOT_TOKEN, &json!({}))
        .json()
        .unwrap();
    assert_eq!(
        missing["error"],
        "configuration is missing, entities is missing"
    );

    let mut group = body.clone();
    group["entities"][0]["source_type"] = json!("group_entity");
    let refused = start_migration(&server, ROOT_TOKEN, &group);
    assert_eq!(refused.status(), 400);
    let refused: Value = refused.json().unwrap();
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("this server migrates projects only"),
        "{refused}"
    );

    let mut nowhere = body.clone();
    nowhere["entities"][0]["destination_namespace"] = json!("nobody");
    let refused = start_migration(&server, ROOT_TOKEN, &nowhere);
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().unwrap();
    assert_eq!(
        refused["message"],
        "Import failed. 'nobody' is invalid, or you do not have permission."
    );

    // The same form GitLab's docs use, Rack-style.
    let form = [
        ("configuration[url]", "http://127.0.0.1:1"),
        ("configuration[access_token]", SOURCE_TOKEN),
        ("entities[][source_type]", "project_entity"),
        ("entities[][source_full_path]", "group/project"),
        ("entities[][destination_slug]", "copy"),
        ("entities[][destination_namespace]", "root"),
    ];
    let local = client()
        .post(server.url("/bulk_imports"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(local.status(), 400, "a local source is refused by default");
    let local: Value = local.json().unwrap();
    assert!(
        local["message"]
            .as_str()
            .unwrap()
            .starts_with("configuration[url] is blocked"),
        "{local}"
    );

    let created = start_migration(&server, ROOT_TOKEN, &body);
    assert_eq!(created.status(), 201);
    let created: Value = created.json().unwrap();
    let id = created["id"].as_u64().unwrap();
    let taken = start_migration(&server, ROOT_TOKEN, &body);
    assert_eq!(taken.status(), 422);
    let taken: Value = taken.json().unwrap();
    assert_eq!(
        taken["message"],
        "Import failed. 'root/copy' already exists. Change the destination and try again."
    );

    // Someone else's migration is not found; a bad id is Grape's 400.
    let (_, bob) = server.create_user("bob");
    let hidden = server.get(Some(&bob), &format!("/bulk_imports/{id}"));
    assert_eq!(hidden.status(), 404);
    let hidden = server.post(Some(&bob), &format!("/bulk_imports/{id}/cancel"));
    assert_eq!(hidden.status(), 404);
    let listed: Vec<Value> = server.get(Some(&bob), "/bulk_imports").json().unwrap();
    assert!(listed.is_empty());
    let bad = server.get(Some(ROOT_TOKEN), "/bulk_imports/x");
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().unwrap();
    assert_eq!(bad["error"], "import_id is invalid");
    let bad: Value = server
        .get(Some(ROOT_TOKEN), "/bulk_imports?status=done")
        .json()
        .unwrap();
    assert_eq!(bad["error"], "status does not have a valid value");
    let missing = server.get(
        Some(ROOT_TOKEN),
        &format!("/bulk_imports/{id}/entities/999"),
    );
    assert_eq!(missing.status(), 404);

    let listed = server.get(Some(ROOT_TOKEN), "/bulk_imports?per_page=1");
    assert_eq!(listed.headers()["x-total"], "1");
    let listed: Vec<Value> = listed.json().unwrap();
    assert_eq!(listed[0]["id"], id);
}

/// Every file of a project travels between two instances of this server,
/// byte for byte: the repository, wiki, design and snippet bundles, the
/// uploads and the LFS objects (the wiki and the snippets' repositories as
/// relations of this server's own, exported only when a project has them).
#[test]
fn every_file_of_a_project_migrates_byte_for_byte() {
    let source = Server::start();
    let (_, alice) = source.create_user("alice");
    let bundle =
        |seed: u8, len: usize| -> Vec<u8> { (0..len).map(|i| seed ^ (i % 251) as u8).collect() };
    let (repository, wiki, design) = (bundle(1, 70_000), bundle(2, 5_000), bundle(3, 3_000));
    let (snippet, upload, lfs) = (bundle(4, 2_000), bundle(5, 900), bundle(6, 40_000));
    let archive = tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", br#"{"description":"every file"}"#),
        (
            "tree/project/issues.ndjson",
            b"{\"iid\":1,\"title\":\"one\"}\n",
        ),
        ("project.bundle", &repository),
        ("project.wiki.bundle", &wiki),
        ("project.design.bundle", &design),
        ("snippets/6f1ed002ab5595859014ebf0951522d9.bundle", &snippet),
        ("uploads/0123abcd/picture.png", &upload),
        (
            "lfs-objects/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            &lfs,
        ),
    ]);
    let imported = source.import_and_wait(&alice, archive, &[("path", "files")]);
    assert_eq!(imported["import_status"], "finished", "{imported}");
    let source_id = imported["id"].as_u64().unwrap();

    // The relations export lists the extension relations of this project.
    let statuses: Value = {
        source.post(
            Some(&alice),
            &format!("/projects/{source_id}/export_relations"),
        );
        loop {
            let statuses: Value = source
                .get(
                    Some(&alice),
                    &format!("/projects/{source_id}/export_relations/status"),
                )
                .json()
                .unwrap();
            let done = statuses
                .as_array()
                .is_some_and(|all| !all.is_empty() && all.iter().all(|s| s["status"] != 0));
            if done {
                break statuses;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let names: Vec<&str> = statuses
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["relation"].as_str().unwrap())
        .collect();
    for relation in [
        "repository",
        "design",
        "uploads",
        "lfs_objects",
        "wiki",
        "snippet_repositories",
    ] {
        assert!(names.contains(&relation), "{relation} in {names:?}");
    }
    // In GitLab's layout: `repository.bundle`, paths inside the folder,
    // and the LFS objects' repository types.
    let (status, _, file) = source.download_relation(&alice, source_id, "relation=repository");
    assert_eq!(status, 200);
    assert_eq!(
        read_archive(&file).files.keys().collect::<Vec<_>>(),
        vec!["repository.bundle"]
    );
    let (_, _, file) = source.download_relation(&alice, source_id, "relation=uploads");
    assert_eq!(
        read_archive(&file).files.keys().collect::<Vec<_>>(),
        vec!["0123abcd/picture.png"]
    );
    let (_, _, file) = source.download_relation(&alice, source_id, "relation=lfs_objects");
    let lfs_files = read_archive(&file).files;
    let types: Value = serde_json::from_slice(&lfs_files["lfs_objects.json"]).unwrap();
    assert_eq!(
        types,
        json!({"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08": [null]})
    );

    let destination = destination();
    let body = migration_of(&source.base, &alice, "alice/files", "files");
    let (migration, entity) = migrate(&destination, &body);
    assert_eq!(migration["status"], "finished", "{entity}");
    assert_eq!(entity["failures"], json!([]));
    assert_eq!(entity["not_migrated"], json!([]), "nothing stays behind");
    let project_id = entity["project_id"].as_u64().unwrap();
    let (_, from) = source.export_and_download(&alice, source_id);
    let (_, to) = destination.export_and_download(ROOT_TOKEN, project_id);
    let (from, to) = (read_archive(&from), read_archive(&to));
    let project_files = from
        .files
        .keys()
        .filter(|path| !path.contains("VERSION") && !path.starts_with("GITLAB_"));
    assert_eq!(project_files.count(), 6, "{:?}", from.files.keys());
    assert_eq!(to.files, from.files);
    assert_eq!(to.relations, from.relations);
    assert_eq!(to.attributes, from.attributes);
}
