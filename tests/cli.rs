//! The local binary explains itself: `--help` for every subcommand, naming
//! every flag and its environment variable.

use std::process::Command;

use e2e::local_binary;

fn help(args: &[&str]) -> String {
    let output = Command::new(local_binary())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_subcommand_and_flag_has_help() {
    let top = help(&[]);
    for command in ["serve", "user", "token", "compact"] {
        assert!(top.contains(command), "{top}");
    }
    let serve = help(&["serve"]);
    for flag in [
        "--bind",
        "--data-dir",
        "--workers",
        "--public-url",
        "--download-ttl",
        "--download-redirect",
        "--max-upload-bytes",
        "--max-uncompressed-bytes",
        "--max-entries",
        "--max-record-bytes",
        "--max-json-depth",
        "--export-rate-limit",
        "--relation-batch-size",
        "--export-schedule-every",
        "--log-json",
    ] {
        let line = serve
            .lines()
            .find(|l| l.contains(flag))
            .unwrap_or_else(|| panic!("{flag} is not in `serve --help`:\n{serve}"));
        assert!(!line.trim().is_empty());
    }
    assert!(serve.contains("[env: LOCAL_DATA_DIR="), "{serve}");
    for command in [
        &["user", "create"][..],
        &["token", "create"][..],
        &["compact"][..],
    ] {
        let text = help(command);
        assert!(text.contains("--data-dir"), "{text}");
    }
}

/// A deleted project's records leave the database file as big as it was
/// (freed pages are reused, not returned); `local compact` returns them.
#[test]
fn compact_gives_a_deleted_projects_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("state.redb");
    let size = || std::fs::metadata(&database).unwrap().len();
    let server = e2e::Server::start_in(dir.path(), &[]);
    let status = server.import_and_wait(
        e2e::ROOT_TOKEN,
        e2e::synthetic_archive(3_000),
        &[("path", "big")],
    );
    let id = status["id"].as_u64().unwrap();
    let with_project = size();
    let deleted = e2e::client()
        .delete(server.url(&format!("/projects/{id}")))
        .header("PRIVATE-TOKEN", e2e::ROOT_TOKEN)
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 202);
    // The deletion runs behind the answer; the server is stopped once the
    // queue is quiet.
    std::thread::sleep(std::time::Duration::from_secs(2));
    drop(server);
    let with_freed_pages = size();

    let output = Command::new(local_binary())
        .args(["compact", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("compacted "), "{text}");
    // redb itself may already have cut freed pages off the file's end;
    // whatever it kept, compaction leaves a fraction of the project's size.
    assert!(
        size() <= with_freed_pages && size() * 4 < with_project,
        "{} bytes after compaction, {with_freed_pages} before, {with_project} with the project",
        size()
    );
    // The data directory still serves, without the project.
    let server = e2e::Server::start_in(dir.path(), &[]);
    assert_eq!(
        server
            .get(Some(e2e::ROOT_TOKEN), &format!("/projects/{id}"))
            .status(),
        404
    );
}
