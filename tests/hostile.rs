//! Hostile archives: every case fails cleanly with an error that names the
//! problem, nothing of it becomes visible, nothing is written outside the
//! data directory's own places, and the server keeps serving.

use e2e::hostile::{as_gzip_members, corpus, raw_tar_gz, RawEntry, LIMIT_FLAGS};
use e2e::{read_archive, synthetic_archive, Server, ROOT_TOKEN};
use serde_json::Value;

fn files_under(dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn every_hostile_archive_fails_cleanly() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let server = Server::start_in(&data, LIMIT_FLAGS);

    for (name, archive, expected) in corpus() {
        if name == "gzip-bomb" {
            assert!(
                archive.len() < 1_000_000,
                "the bomb is small: {} bytes",
                archive.len()
            );
        }
        let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", name)]);
        assert_eq!(status["import_status"], "failed", "{name}: {status}");
        let error = status["import_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected),
            "{name}: {error:?} should say {expected:?}"
        );
        let (_, exported) = server.export_and_download(ROOT_TOKEN, status["id"].as_u64().unwrap());
        let content = read_archive(&exported);
        assert!(
            content.relations.is_empty(),
            "{name}: records became visible"
        );
        let blobs: Vec<&String> = content
            .files
            .keys()
            .filter(|k| !k.starts_with("GITLAB_") && *k != "VERSION")
            .collect();
        assert!(blobs.is_empty(), "{name}: files became visible: {blobs:?}");
        assert_eq!(
            server.get(Some(ROOT_TOKEN), "/user").status(),
            200,
            "{name}: the server keeps serving"
        );
    }

    // Nothing was written outside the data directory, nothing of the failed
    // imports stayed inside it but the state database and the export archives.
    assert!(!temp.path().join("owned").exists());
    assert!(!std::path::Path::new("/tmp/owned").exists());
    let mut files = Vec::new();
    files_under(&data, &mut files);
    let data_prefix = data.to_string_lossy().into_owned();
    for file in &files {
        let relative = &file[data_prefix.len() + 1..];
        assert!(
            relative == "state.redb"
                || relative == "signing.key"
                || relative.starts_with("blobs/exports/"),
            "unexpected file left behind: {relative}"
        );
    }
}

#[test]
fn unknown_relations_are_kept_as_data_and_uploads_are_size_limited() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), LIMIT_FLAGS);
    let archive = raw_tar_gz(&[
        RawEntry::file("VERSION", "0.2.4"),
        RawEntry::file("tree/project.json", "{}"),
        RawEntry::file("tree/project/future_relation.ndjson", "{\"kept\":true}\n"),
        // A name the local store uses at its root is a plain name below it.
        RawEntry::file("uploads/.staging/kept.txt", "kept"),
    ]);
    let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", "future")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    let (_, exported) = server.export_and_download(ROOT_TOKEN, status["id"].as_u64().unwrap());
    assert_eq!(
        read_archive(&exported).relations["future_relation"],
        vec![serde_json::json!({"kept": true})]
    );
    assert_eq!(
        read_archive(&exported).files["uploads/.staging/kept.txt"],
        b"kept"
    );

    let too_big = vec![0u8; 3_500_000];
    let response = server.import(ROOT_TOKEN, too_big, &[("path", "big")]);
    assert_eq!(response.status(), 413);
    let body: Value = response.json().unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("larger than 3000000 bytes"),
        "{body}"
    );
    assert!(
        !temp.path().join("blobs/imports").exists()
            || std::fs::read_dir(temp.path().join("blobs/imports"))
                .unwrap()
                .count()
                == 0
    );
}

#[test]
fn a_failed_import_can_be_overwritten_cleanly() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), LIMIT_FLAGS);
    let failed = server.import_and_wait(ROOT_TOKEN, b"junk".to_vec(), &[("path", "again")]);
    assert_eq!(failed["import_status"], "failed");
    let good = raw_tar_gz(&[
        RawEntry::file("VERSION", "0.2.4"),
        RawEntry::file("tree/project.json", "{\"description\":\"second try\"}"),
        RawEntry::file("tree/project/issues.ndjson", "{\"iid\":1}\n"),
    ]);
    let status = server.import_and_wait(
        ROOT_TOKEN,
        good,
        &[("path", "again"), ("overwrite", "true")],
    );
    assert_eq!(status["import_status"], "finished", "{status}");
    assert_eq!(status["id"], failed["id"]);
    assert_eq!(status["description"], "second try");
    assert_eq!(status["import_error"], Value::Null);
}

#[test]
fn an_archive_of_many_gzip_members_imports_whole() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &[]);
    let issues = 3_000;
    let members = as_gzip_members(&synthetic_archive(issues), 64 * 1024);
    let starts = members.windows(3).filter(|w| *w == [0x1f, 0x8b, 8]).count();
    assert!(starts > 5, "{starts} members");
    let status = server.import_and_wait(ROOT_TOKEN, members, &[("path", "members")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    let (_, exported) = server.export_and_download(ROOT_TOKEN, status["id"].as_u64().unwrap());
    let content = read_archive(&exported);
    assert_eq!(content.relations["issues"].len(), issues);
    assert_eq!(content.relations["merge_requests"].len(), issues / 10);
    assert!(content.files.contains_key("uploads/abc123/screenshot.png"));
}
