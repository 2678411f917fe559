//! The local server killed (SIGKILL) in the middle of an import or an
//! export, then restarted on the same data directory: the work completes,
//! whole, and the store opens cleanly.

use std::time::{Duration, Instant};

use e2e::{read_archive, synthetic_archive, Server, ROOT_TOKEN};
use serde_json::Value;

const ISSUES: usize = 40_000;

/// Polls `path` until `field` is `started`; panics if the work ends first.
fn wait_started(server: &Server, path: &str, field: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = server.get(Some(ROOT_TOKEN), path).json().unwrap();
        match status[field].as_str() {
            Some("started") => return,
            Some("finished" | "failed") => panic!("finished before the kill: {status}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn an_import_killed_midway_completes_after_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(temp.path(), &[]);
    let response = server.import(ROOT_TOKEN, synthetic_archive(ISSUES), &[("path", "killed")]);
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().unwrap()["id"].as_u64().unwrap();
    wait_started(&server, &format!("/projects/{id}/import"), "import_status");
    server.kill();

    let server = Server::start_in(temp.path(), &[]);
    let status = server.wait_import(ROOT_TOKEN, id);
    assert_eq!(status["import_status"], "finished", "{status}");
    let (_, archive) = server.export_and_download(ROOT_TOKEN, id);
    let content = read_archive(&archive);
    assert_eq!(content.relations["issues"].len(), ISSUES);
    assert_eq!(content.relations["issues"][ISSUES - 1]["iid"], ISSUES);
}

#[test]
fn an_export_killed_midway_completes_after_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(temp.path(), &[]);
    let status = server.import_and_wait(
        ROOT_TOKEN,
        synthetic_archive(ISSUES),
        &[("path", "exported")],
    );
    let id = status["id"].as_u64().unwrap();
    assert_eq!(
        server
            .post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"))
            .status(),
        202
    );
    wait_started(&server, &format!("/projects/{id}/export"), "export_status");
    server.kill();

    let server = Server::start_in(temp.path(), &[]);
    let status = server.wait_export(ROOT_TOKEN, id);
    assert_eq!(status["export_status"], "finished", "{status}");
    let (_, archive) = server.download(ROOT_TOKEN, id);
    assert_eq!(read_archive(&archive).relations["issues"].len(), ISSUES);
    // No half-written archive was left behind.
    let exports = temp.path().join(format!("blobs/exports/{id}"));
    assert_eq!(std::fs::read_dir(&exports).unwrap().count(), 1);
}
