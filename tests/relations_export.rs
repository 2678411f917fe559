//! The Project relations export API on the local server: one file per
//! relation, built in parallel by independent workers, batched for size.

use std::collections::BTreeMap;

use e2e::{
    fixture_archive, fixture_relations, fixtures_dir, gunzip, ndjson, read_archive,
    synthetic_archive, Server, ROOT_TOKEN,
};
use serde_json::{json, Value};

fn import(server: &Server, archive: Vec<u8>, path: &str) -> u64 {
    let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", path)]);
    assert_eq!(status["import_status"], "finished", "{status}");
    status["id"].as_u64().unwrap()
}

fn schedule(server: &Server, id: u64, query: &str) {
    let response = server.post(
        Some(ROOT_TOKEN),
        &format!("/projects/{id}/export_relations{query}"),
    );
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().unwrap(),
        json!({"message": "202 Accepted"})
    );
}

#[test]
fn every_relation_file_together_equals_the_full_export() {
    let server = Server::start();
    let id = import(&server, fixture_archive("complex"), "complex");
    schedule(&server, id, "");
    let statuses = server.wait_relations_export(ROOT_TOKEN, id);
    for entry in &statuses {
        assert_eq!(entry["status"], 1, "{entry}");
        assert_eq!(entry["error"], Value::Null);
        assert_eq!(entry["batched"], false);
        assert_eq!(entry["batches_count"], 0);
        assert!(entry.get("batches").is_none());
        assert_eq!(
            entry["total_objects_count"], entry["exported_objects_count"],
            "{entry}"
        );
    }
    let names: Vec<&str> = statuses
        .iter()
        .map(|e| e["relation"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "self");
    assert!(
        names.contains(&"issues") && names.contains(&"push_rule"),
        "{names:?}"
    );

    // GitLab's file relations are there, empty ones too (a tar.gz each).
    let file_relations = ["uploads", "lfs_objects", "repository", "design"];
    for relation in file_relations {
        assert!(names.contains(&relation), "{relation} in {names:?}");
    }
    assert!(
        !names.contains(&"project_members"),
        "members are not portable"
    );

    let mut from_relations = BTreeMap::new();
    for name in names
        .iter()
        .filter(|n| **n != "self" && !file_relations.contains(n))
    {
        let (status, disposition, file) =
            server.download_relation(ROOT_TOKEN, id, &format!("relation={name}"));
        assert_eq!(status, 200, "{name}");
        assert!(
            disposition.contains(&format!("{name}.ndjson.gz")),
            "{disposition}"
        );
        let records = ndjson(&gunzip(&file));
        if !records.is_empty() {
            from_relations.insert(name.to_string(), records);
        }
    }
    // Every relation of the archive but the members.
    let mut portable = fixture_relations("complex");
    portable.remove("project_members");
    assert_eq!(from_relations, portable);

    let (status, disposition, file) = server.download_relation(ROOT_TOKEN, id, "relation=self");
    assert_eq!(status, 200);
    assert!(disposition.contains("self.json.gz"), "{disposition}");
    let attributes: Value = serde_json::from_slice(&gunzip(&file)).unwrap();
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir().join("complex/tree/project.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(attributes, expected);

    // The same project's full export holds exactly these records, and the
    // members.
    let (_, archive) = server.export_and_download(ROOT_TOKEN, id);
    let mut full = read_archive(&archive).relations;
    full.remove("project_members");
    assert_eq!(full, from_relations);

    // One relation's status alone.
    let one: Value = server
        .get(
            Some(ROOT_TOKEN),
            &format!("/projects/{id}/export_relations/status?relation=issues"),
        )
        .json()
        .unwrap();
    assert_eq!(
        (
            one["relation"].as_str(),
            one["status"].as_i64(),
            one["total_objects_count"].as_u64()
        ),
        (Some("issues"), Some(1), Some(12))
    );
}

#[test]
fn batched_export_splits_a_large_relation_and_file_relations_are_tarballs() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        temp.path(),
        &["--relation-batch-size", "1000", "--workers", "4"],
    );
    let id = import(&server, synthetic_archive(2_500), "big");
    schedule(&server, id, "?batched=true");
    let statuses = server.wait_relations_export(ROOT_TOKEN, id);
    let issues = statuses.iter().find(|e| e["relation"] == "issues").unwrap();
    assert_eq!(issues["status"], 1, "{issues}");
    assert_eq!(
        (
            issues["batched"].as_bool(),
            issues["batches_count"].as_u64(),
            issues["total_objects_count"].as_u64()
        ),
        (Some(true), Some(3), Some(2500))
    );
    let counts: Vec<(u64, u64, i64)> = issues["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["batch_number"].as_u64().unwrap(),
                b["objects_count"].as_u64().unwrap(),
                b["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, vec![(1, 1000, 1), (2, 1000, 1), (3, 500, 1)]);
    let empty = statuses
        .iter()
        .find(|e| e["relation"] == "milestones")
        .unwrap();
    assert_eq!(
        (
            empty["status"].as_i64(),
            empty["batches_count"].as_u64(),
            empty["batches"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0), Some(0))
    );

    let mut all = Vec::new();
    for n in 1..=3 {
        let (status, _, file) = server.download_relation(
            ROOT_TOKEN,
            id,
            &format!("relation=issues&batched=true&batch_number={n}"),
        );
        assert_eq!(status, 200);
        all.extend(ndjson(&gunzip(&file)));
    }
    let iids: Vec<u64> = all.iter().map(|r| r["iid"].as_u64().unwrap()).collect();
    assert_eq!(
        iids,
        (1..=2500).collect::<Vec<_>>(),
        "batches together hold every record, in order"
    );

    let expect = |query: &str, status: u16, message: &str| {
        let (got, _, body) = server.download_relation(ROOT_TOKEN, id, query);
        assert_eq!(got, status, "{query}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(e2e::error_text(&body).contains(message), "{query}: {body}");
    };
    expect("relation=issues", 400, "Export is batched");
    expect("relation=issues&batched=true", 400, "all or none");
    expect(
        "relation=issues&batched=true&batch_number=4",
        404,
        "Batch not found",
    );
    expect(
        "relation=self&batched=true&batch_number=1",
        400,
        "Export is not batched",
    );

    // File relations: what the project holds as files, as tar.gz.
    let (status, disposition, file) = server.download_relation(ROOT_TOKEN, id, "relation=uploads");
    assert_eq!(status, 200);
    assert!(disposition.contains("uploads.tar.gz"), "{disposition}");
    // GitLab's layout: paths inside the uploads folder.
    let files = read_archive(&file).files;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        vec!["abc123/screenshot.png"]
    );
    let repository = statuses
        .iter()
        .find(|e| e["relation"] == "repository")
        .unwrap();
    assert_eq!(
        (
            repository["status"].as_i64(),
            repository["total_objects_count"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // GitLab's portable relations (BulkImports::FileTransfer::ProjectConfig):
    // its four file relations, empty ones too; never the members; the wiki
    // only for a project that has one (this server's extension).
    for relation in ["lfs_objects", "design"] {
        let entry = statuses.iter().find(|e| e["relation"] == relation);
        let entry = entry.unwrap_or_else(|| panic!("{relation} is exported"));
        assert_eq!(
            (
                entry["status"].as_i64(),
                entry["total_objects_count"].as_u64()
            ),
            (Some(1), Some(0)),
            "{entry}"
        );
        let (status, _, file) =
            server.download_relation(ROOT_TOKEN, id, &format!("relation={relation}"));
        assert_eq!(status, 200);
        let files = read_archive(&file).files;
        if relation == "lfs_objects" {
            // GitLab's list of the objects' repository types, empty.
            assert_eq!(files.keys().collect::<Vec<_>>(), vec!["lfs_objects.json"]);
            assert_eq!(files["lfs_objects.json"], b"{}");
        } else {
            assert!(files.is_empty());
        }
    }
    for absent in ["wiki", "project_members"] {
        assert!(
            statuses.iter().all(|e| e["relation"] != absent),
            "{absent} is not portable"
        );
    }
}

#[test]
fn a_failing_relation_leaves_the_others_and_reposting_restarts() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &[]);
    let id = import(&server, synthetic_archive(30), "moving");
    // With the workers stopped: an overwrite import is queued first, then a
    // relations export of the content as it is now.
    let server = server.restart(&["--workers", "0"]);
    let response = server.import(
        ROOT_TOKEN,
        e2e::synthetic_archive(5),
        &[("path", "moving"), ("overwrite", "true")],
    );
    assert_eq!(response.status(), 201);
    schedule(&server, id, "");
    // The import runs first and replaces the content the export was to read.
    let server = server.restart(&["--workers", "1"]);
    assert_eq!(
        server.wait_import(ROOT_TOKEN, id)["import_status"],
        "finished"
    );
    let statuses = server.wait_relations_export(ROOT_TOKEN, id);
    let by_name: BTreeMap<&str, &Value> = statuses
        .iter()
        .map(|e| (e["relation"].as_str().unwrap(), e))
        .collect();
    assert_eq!(by_name["issues"]["status"], -1);
    assert!(
        by_name["issues"]["error"]
            .as_str()
            .unwrap()
            .contains("changed during the export"),
        "{}",
        by_name["issues"]
    );
    assert_eq!(
        by_name["milestones"]["status"], 1,
        "an empty relation still finishes"
    );
    let (status, _, _) = server.download_relation(ROOT_TOKEN, id, "relation=issues");
    assert_eq!(status, 404);

    schedule(&server, id, "");
    let statuses = server.wait_relations_export(ROOT_TOKEN, id);
    assert!(statuses.iter().all(|e| e["status"] == 1), "{statuses:?}");
    let (_, _, file) = server.download_relation(ROOT_TOKEN, id, "relation=issues");
    assert_eq!(ndjson(&gunzip(&file)).len(), 5);
}

#[test]
fn relations_export_routes_refuse_bad_requests() {
    let server = Server::start();
    let (_, alice) = server.create_user("alice");
    let id = import(&server, synthetic_archive(3), "p");
    let status: Value = server
        .get(
            Some(ROOT_TOKEN),
            &format!("/projects/{id}/export_relations/status"),
        )
        .json()
        .unwrap();
    assert_eq!(status, json!([]), "nothing exported yet");
    let (code, _, body) = server.download_relation(ROOT_TOKEN, id, "relation=labels");
    assert_eq!(
        (code, serde_json::from_slice::<Value>(&body).unwrap()),
        // GitLab's relations export API: render_api_error!('Export not found', 404).
        (404, json!({"message": "Export not found"}))
    );

    let routes = [
        ("POST", format!("/projects/{id}/export_relations")),
        ("GET", format!("/projects/{id}/export_relations/status")),
        (
            "GET",
            format!("/projects/{id}/export_relations/download?relation=labels"),
        ),
    ];
    for (method, path) in &routes {
        let call = |token: Option<&str>| match *method {
            "POST" => server.post(token, path),
            _ => server.get(token, path),
        };
        assert_eq!(call(None).status(), 401, "{path}");
        let other = call(Some(&alice));
        assert_eq!(other.status(), 404, "{path}");
        assert_eq!(
            other.json::<Value>().unwrap(),
            json!({"message": "404 Project Not Found"})
        );
    }

    schedule(&server, id, "");
    server.wait_relations_export(ROOT_TOKEN, id);
    // Grape's validation errors, with GitLab's validator texts
    // (lib/api/validations/validators/project_portable.rb: "is not portable";
    // lib/api/project_export.rb: `requires :relation`, `all_or_none_of`).
    for (query, status, body) in [
        (
            "relation=no_such_relation",
            400,
            json!({"error": "relation is not portable"}),
        ),
        (
            "relation=..%2Fetc",
            400,
            json!({"error": "relation is not portable"}),
        ),
        (
            "relation=project_members",
            400,
            json!({"error": "relation is not portable"}),
        ),
        ("", 400, json!({"error": "relation is missing"})),
        (
            "relation=labels&batched=maybe",
            400,
            json!({"error": "batched is invalid"}),
        ),
    ] {
        let (got, _, answer) = server.download_relation(ROOT_TOKEN, id, query);
        assert_eq!(got, status, "{query}");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer, body, "{query}");
    }
    // The status route has no portability check: a relation no run has is
    // `render_api_error!('Export not found', 404)`.
    for relation in ["nope", "project_members"] {
        let response = server.get(
            Some(ROOT_TOKEN),
            &format!("/projects/{id}/export_relations/status?relation={relation}"),
        );
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.json::<Value>().unwrap(),
            json!({"message": "Export not found"})
        );
    }
}

/// The runs with files on disk for project `id`.
fn runs_on_disk(server: &Server, id: u64) -> Vec<String> {
    fn holds_a_file(dir: &std::path::Path) -> bool {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let path = e.path();
                path.is_file() || (path.is_dir() && holds_a_file(&path))
            })
        })
    }
    let dir = server
        .data_dir
        .join(format!("blobs/exports/{id}/relations"));
    let mut runs: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| holds_a_file(&e.path()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    runs.sort();
    runs
}

fn export_relations_and_wait(server: &Server, id: u64, query: &str) -> Vec<Value> {
    schedule(server, id, query);
    server.wait_relations_export(ROOT_TOKEN, id)
}

#[test]
fn a_replaced_relations_export_is_deleted_once_no_url_to_it_can_be_live() {
    // Download URLs live five minutes: a replaced run stays that long.
    let server = Server::start();
    let id = import(&server, synthetic_archive(30), "kept");
    export_relations_and_wait(&server, id, "?batched=true");
    let first = runs_on_disk(&server, id);
    assert_eq!(first.len(), 1);
    export_relations_and_wait(&server, id, "");
    let both = runs_on_disk(&server, id);
    assert_eq!(both.len(), 2, "the first run was replaced moments ago");
    assert!(both.contains(&first[0]));
    // A third start: the second run was replaced just now, the first when
    // the second started, less than a URL's lifetime ago too.
    export_relations_and_wait(&server, id, "");
    assert_eq!(runs_on_disk(&server, id).len(), 3);

    // URLs that expire at once: a run that finishes leaves only itself.
    let server = server.restart(&["--download-ttl", "0"]);
    let statuses = export_relations_and_wait(&server, id, "?batched=true");
    assert!(statuses.iter().all(|e| e["status"] == 1), "{statuses:?}");
    // The run ends (and prunes) just after its last relation reports done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = runs_on_disk(&server, id);
    while last.len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
        last = runs_on_disk(&server, id);
    }
    assert_eq!(last.len(), 1, "{last:?}");
    assert!(!first.contains(&last[0]));
    let (status, _, file) = server.download_relation(
        ROOT_TOKEN,
        id,
        "relation=issues&batched=true&batch_number=1",
    );
    assert_eq!(status, 200);
    assert_eq!(ndjson(&gunzip(&file)).len(), 30);
}

#[test]
fn a_relations_export_with_a_failed_relation_leaves_the_run_before_it() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &["--download-ttl", "0"]);
    let id = import(&server, synthetic_archive(30), "failing");
    export_relations_and_wait(&server, id, "");
    let good = runs_on_disk(&server, id);
    assert_eq!(good.len(), 1);
    // As in the test above: an overwrite that runs before the export makes
    // its `issues` fail.
    let server = server.restart(&["--workers", "0", "--download-ttl", "0"]);
    let response = server.import(
        ROOT_TOKEN,
        synthetic_archive(5),
        &[("path", "failing"), ("overwrite", "true")],
    );
    assert_eq!(response.status(), 201);
    schedule(&server, id, "");
    let server = server.restart(&["--workers", "1", "--download-ttl", "0"]);
    assert_eq!(
        server.wait_import(ROOT_TOKEN, id)["import_status"],
        "finished"
    );
    let statuses = server.wait_relations_export(ROOT_TOKEN, id);
    assert!(statuses.iter().any(|e| e["status"] == -1), "{statuses:?}");
    let after = runs_on_disk(&server, id);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&good[0]));
}
