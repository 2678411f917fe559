//! Relation-level import on the local server: filling the gaps of one
//! relation from an archive, without duplicates, and saying what failed.

use e2e::{
    fixture_archive, fixture_archive_edited, fixture_relations, fixture_without_half, read_archive,
    synthetic_archive, tar_gz, ArchiveContent, Server, ROOT_TOKEN,
};
use serde_json::Value;

fn import_project(server: &Server, archive: Vec<u8>, path: &str) -> u64 {
    let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", path)]);
    assert_eq!(status["import_status"], "finished", "{status}");
    status["id"].as_u64().unwrap()
}

/// Starts a relation import and checks GitLab's 201 answer; returns its id.
fn start(server: &Server, path: &str, relation: &str, archive: Vec<u8>) -> u64 {
    let full_path = format!("root/{path}");
    let response = server.import_relation(ROOT_TOKEN, &full_path, relation, archive);
    assert_eq!(response.status(), 201);
    let body: Value = response.json().unwrap();
    assert_eq!(body["project_path"], format!("root/{path}"), "{body}");
    assert_eq!(body["relation"], relation);
    assert_eq!(body["status"], "created");
    assert!(body["created_at"].is_string() && body["updated_at"].is_string());
    body["id"].as_u64().expect("a numeric id")
}

fn exported(server: &Server, id: u64) -> ArchiveContent {
    let (_, archive) = server.export_and_download(ROOT_TOKEN, id);
    read_archive(&archive)
}

#[test]
fn filling_the_gaps_of_two_relations_restores_the_fixture() {
    let server = Server::start();
    let halved = fixture_without_half("complex", &["issues", "merge_requests"]);
    let id = import_project(&server, halved, "gaps");
    let before = exported(&server, id);
    assert_eq!(before.relations["issues"].len(), 6);
    assert_eq!(before.relations["merge_requests"].len(), 5);

    let issues = start(&server, "gaps", "issues", fixture_archive("complex"));
    let done = server.wait_relation_import(ROOT_TOKEN, id, issues);
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(
        (
            &done["fetched_objects_count"],
            &done["imported_objects_count"],
            &done["skipped_objects_count"]
        ),
        (&Value::from(12), &Value::from(6), &Value::from(6)),
        "{done}"
    );
    let merge_requests = start(
        &server,
        "gaps",
        "merge_requests",
        fixture_archive("complex"),
    );
    assert!(merge_requests > issues);
    let done = server.wait_relation_import(ROOT_TOKEN, id, merge_requests);
    assert_eq!(done["status"], "finished", "{done}");

    // Record for record, in GitLab's order, every relation as in the fixture.
    let after = exported(&server, id);
    assert_eq!(after.relations, fixture_relations("complex"));

    // Newest first, as GitLab lists them.
    let list: Value = server
        .get(
            Some(ROOT_TOKEN),
            &format!("/projects/{id}/relation-imports"),
        )
        .json()
        .unwrap();
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![merge_requests, issues]);

    // The import status shows the live counters of the project's import.
    let status: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{id}/import"))
        .json()
        .unwrap();
    assert_eq!(status["failed_relations"], Value::Array(vec![]));
    assert_eq!(status["stats"]["imported"]["issues"], 6, "{status}");

    // The same archive again adds nothing.
    let again = start(&server, "gaps", "issues", fixture_archive("complex"));
    let done = server.wait_relation_import(ROOT_TOKEN, id, again);
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(done["imported_objects_count"], 0, "{done}");
    assert_eq!(done["skipped_objects_count"], 12, "{done}");
    assert_eq!(
        exported(&server, id).relations,
        fixture_relations("complex")
    );
}

#[test]
fn a_record_whose_key_exists_is_kept_as_it_is() {
    let server = Server::start();
    let id = import_project(&server, fixture_archive("complex"), "kept");
    let changed = fixture_archive_edited("complex", |path, bytes| {
        if path == "tree/project/milestones.ndjson" {
            String::from_utf8(bytes)
                .unwrap()
                .replace("\"title\":\"", "\"title\":\"changed ")
                .into_bytes()
        } else {
            bytes
        }
    });
    let number = start(&server, "kept", "milestones", changed);
    let done = server.wait_relation_import(ROOT_TOKEN, id, number);
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(done["skipped_objects_count"], 3, "{done}");
    assert_eq!(
        exported(&server, id).relations,
        fixture_relations("complex")
    );
}

#[test]
fn a_corrupt_line_fails_the_relation_and_changes_nothing() {
    let server = Server::start();
    let halved = fixture_without_half("complex", &["issues"]);
    let id = import_project(&server, halved, "corrupt");
    let before = exported(&server, id);

    let corrupt = fixture_archive_edited("complex", |path, bytes| {
        if path != "tree/project/issues.ndjson" {
            return bytes;
        }
        let text = String::from_utf8(bytes).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[2] = "{\"iid\": 8, \"title\": ".into();
        (lines.join("\n") + "\n").into_bytes()
    });
    let number = start(&server, "corrupt", "issues", corrupt);
    let done = server.wait_relation_import(ROOT_TOKEN, id, number);
    assert_eq!(done["status"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("line 3"), "{done}");

    let status: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{id}/import"))
        .json()
        .unwrap();
    let failed = status["failed_relations"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{status}");
    let failure = &failed[0];
    assert_eq!(failure["relation_name"], "issues");
    // GitLab counts a relation's records from 0: the third line is 2.
    assert_eq!(failure["line_number"], 2);
    assert_eq!(failure["source"], "relation_import");
    for field in ["id", "created_at", "exception_class", "exception_message"] {
        assert!(!failure[field].is_null(), "{field}: {failure}");
    }
    // The project's own import still finished; nothing of the failed one shows.
    assert_eq!(status["import_status"], "finished");
    assert_eq!(exported(&server, id).relations, before.relations);
}

#[test]
fn bad_requests_are_refused_with_gitlab_codes() {
    let server = Server::start();
    import_project(&server, fixture_archive("complex"), "mine");
    let (_, stranger) = server.create_user("stranger");

    let unknown =
        server.import_relation(ROOT_TOKEN, "root/mine", "bogus", fixture_archive("complex"));
    assert_eq!(unknown.status(), 400);
    let body: Value = unknown.json().unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Imported relation must be one of"),
        "{body}"
    );

    // Someone else's project answers like a missing one.
    let theirs =
        server.import_relation(&stranger, "root/mine", "issues", fixture_archive("complex"));
    assert_eq!(theirs.status(), 404);
    let missing = server.import_relation(
        ROOT_TOKEN,
        "root/none",
        "issues",
        fixture_archive("complex"),
    );
    assert_eq!(missing.status(), 404);
    assert_eq!(
        theirs.json::<Value>().unwrap(),
        missing.json::<Value>().unwrap()
    );
    let listing = server.get(Some(&stranger), "/projects/1/relation-imports");
    assert_eq!(listing.status(), 404);

    let anonymous = server.import_relation("wrong-token", "root/mine", "issues", vec![1, 2]);
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        server.get(None, "/projects/1/relation-imports").status(),
        401
    );

    // No file, no relation.
    let response = e2e::client()
        .post(server.url("/projects/import-relation"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .multipart(
            reqwest::blocking::multipart::Form::new()
                .text("path", "root/mine")
                .text("relation", "issues"),
        )
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    // Grape's validation of `requires :file`: `{"error": "file is missing"}`.
    assert_eq!(
        response.json::<Value>().unwrap(),
        serde_json::json!({"error": "file is missing"})
    );
    let response = server.import_relation(ROOT_TOKEN, "root/mine", "", fixture_archive("complex"));
    assert_eq!(response.status(), 400);

    // Not an archive: accepted, then failed with the reason.
    let number = start(&server, "mine", "issues", b"not gzip".to_vec());
    let done = server.wait_relation_import(ROOT_TOKEN, 1, number);
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "the file is not a gzip archive");
}

/// An archive with the given issues (by position in `all`) and the rest of
/// the synthetic project.
fn repack(all: &ArchiveContent, keep: impl Fn(usize) -> bool) -> Vec<u8> {
    let attributes = serde_json::to_vec(&all.attributes).unwrap();
    let mut relations: Vec<(String, Vec<u8>)> = Vec::new();
    for (relation, records) in &all.relations {
        let mut lines = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if relation != "issues" || keep(i) {
                lines.extend(serde_json::to_vec(record).unwrap());
                lines.push(b'\n');
            }
        }
        relations.push((format!("tree/project/{relation}.ndjson"), lines));
    }
    let mut entries: Vec<(&str, &[u8])> =
        vec![("VERSION", b"0.2.4"), ("tree/project.json", &attributes)];
    entries.extend(relations.iter().map(|(p, b)| (p.as_str(), b.as_slice())));
    tar_gz(&entries)
}

#[test]
fn an_export_during_a_relation_import_sees_old_or_new_never_a_mix() {
    let server = Server::start();
    let full = read_archive(&synthetic_archive(1_000));
    let id = import_project(&server, repack(&full, |i| i % 2 == 0), "busy");
    let old: Vec<Value> = full.relations["issues"]
        .iter()
        .step_by(2)
        .cloned()
        .collect();
    let new = full.relations["issues"].clone();

    let response = server.post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"));
    assert_eq!(response.status(), 202);
    let number = start(&server, "busy", "issues", repack(&full, |_| true));
    let export = server.wait_export(ROOT_TOKEN, id);
    assert_eq!(export["export_status"], "finished", "{export}");
    let (_, archive) = server.download(ROOT_TOKEN, id);
    let issues = &read_archive(&archive).relations["issues"];
    assert!(
        *issues == old || *issues == new,
        "a mix of {} issues",
        issues.len()
    );

    let done = server.wait_relation_import(ROOT_TOKEN, id, number);
    assert_eq!(done["status"], "finished", "{done}");
    assert_eq!(exported(&server, id).relations["issues"], new);
}
