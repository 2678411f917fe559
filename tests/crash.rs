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

/// A sliced export whose server died after a slice's part was stored and
/// before the slice was recorded: after the restart the slice is written
/// again (its part replaced) and the export completes, whole.
#[test]
fn a_sliced_export_killed_between_a_part_and_its_record_completes_after_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let slices = ["--export-slice-bytes", "1048576"];
    let crash = [("CRASH_AT", "export-slice-part-stored")];
    let mut server = Server::start_in_env(temp.path(), &slices, &crash);
    let status =
        server.import_and_wait(ROOT_TOKEN, synthetic_archive(ISSUES), &[("path", "sliced")]);
    let id = status["id"].as_u64().unwrap();
    let response = server.post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"));
    assert_eq!(response.status(), 202);
    assert!(!server.wait_exit().success(), "the crash point was reached");

    let server = Server::start_in(temp.path(), &slices);
    let status = server.wait_export(ROOT_TOKEN, id);
    assert_eq!(status["export_status"], "finished", "{status}");
    let (_, archive) = server.download(ROOT_TOKEN, id);
    let content = read_archive(&archive);
    assert_eq!(content.relations["issues"].len(), ISSUES);
    assert_eq!(content.relations["issues"][ISSUES - 1]["iid"], ISSUES);
    // Only the archive is left: no slice record, no part.
    let exports = temp.path().join(format!("blobs/exports/{id}"));
    let left = files_under(&exports);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("export.tar.gz"), "{left:?}");
    let parts = std::fs::read_dir(temp.path().join("blobs/.parts")).unwrap();
    assert_eq!(parts.count(), 0);
}

/// Killed after an export finished and before it deleted the archive it
/// replaced: the export's unsettled message comes back after the restart
/// and its delivery deletes the replaced archive (without that, the old
/// archive stays on disk until some later export prunes).
#[test]
fn an_export_killed_before_pruning_what_it_replaced_prunes_after_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    // A replaced archive is kept for a download URL's lifetime: 1 s here.
    let ttl = ["--download-ttl", "1"];
    let mut server = Server::start_in(temp.path(), &ttl);
    let status = server.import_and_wait(ROOT_TOKEN, synthetic_archive(50), &[("path", "pruned")]);
    let id = status["id"].as_u64().unwrap();
    server.export_and_download(ROOT_TOKEN, id);
    server.kill();
    let exports = temp.path().join(format!("blobs/exports/{id}"));
    assert_eq!(files_under(&exports).len(), 1);

    let crash = [("CRASH_AT", "export-finished")];
    let mut server = Server::start_in_env(temp.path(), &ttl, &crash);
    let response = server.post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"));
    assert_eq!(response.status(), 202);
    assert!(!server.wait_exit().success(), "the crash point was reached");
    assert_eq!(files_under(&exports).len(), 2, "the replaced and the new");
    // Past the replaced archive's grace before anything prunes.
    std::thread::sleep(Duration::from_millis(1_100));

    let server = Server::start_in(temp.path(), &ttl);
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_under(&exports).len() > 1 {
        assert!(Instant::now() < deadline, "{:?}", files_under(&exports));
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = server.wait_export(ROOT_TOKEN, id);
    assert_eq!(status["export_status"], "finished", "{status}");
    let (_, archive) = server.download(ROOT_TOKEN, id);
    assert_eq!(read_archive(&archive).relations["issues"].len(), 50);
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// The generation folders of a project's content.
fn generation_folders(data: &std::path::Path, id: u64) -> Vec<String> {
    let dir = data.join(format!("blobs/projects/{id}/content"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Killed after the upload was stored and before its import existed: the
/// restart's leftovers sweep deletes the upload no job will read.
#[test]
fn an_upload_killed_before_its_import_existed_is_swept_at_restart() {
    let temp = tempfile::tempdir().unwrap();
    let crash = [("CRASH_AT", "import-upload-stored")];
    let mut server = Server::start_in_env(temp.path(), &[], &crash);
    let answer = server.try_import(ROOT_TOKEN, synthetic_archive(50), &[("path", "cut")]);
    assert!(answer.is_err(), "the server died under the request");
    assert!(!server.wait_exit().success());
    let uploads = temp.path().join("blobs/imports");
    assert_eq!(files_under(&uploads).len(), 1, "the upload was stored");

    let server = Server::start_in(temp.path(), &["--leftovers-grace", "0"]);
    assert_eq!(files_under(&uploads), Vec::<String>::new());
    // The path was never taken: the import can be made again.
    let status = server.import_and_wait(ROOT_TOKEN, synthetic_archive(50), &[("path", "cut")]);
    assert_eq!(status["import_status"], "finished", "{status}");
}

/// Killed after an overwrite import switched its new content in and before
/// it discarded the old: after the restart the import finishes and the data
/// directory holds the new content only (without the sweep, the old
/// generation stays: checked by running this with the default grace).
#[test]
fn an_overwrite_killed_after_its_switch_leaves_only_the_new_content() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(temp.path(), &[]);
    let first = server.import_and_wait(ROOT_TOKEN, synthetic_archive(50), &[("path", "twice")]);
    let id = first["id"].as_u64().unwrap();
    assert_eq!(generation_folders(temp.path(), id).len(), 1);
    server.kill();

    let crash = [("CRASH_AT", "import-switched")];
    let mut server = Server::start_in_env(temp.path(), &[], &crash);
    let answer = server.import(
        ROOT_TOKEN,
        synthetic_archive(60),
        &[("path", "twice"), ("overwrite", "true")],
    );
    assert_eq!(answer.status(), 201);
    assert!(!server.wait_exit().success());
    assert_eq!(generation_folders(temp.path(), id).len(), 2, "old and new");

    let server = Server::start_in(temp.path(), &["--leftovers-grace", "0"]);
    let status = server.wait_import(ROOT_TOKEN, id);
    assert_eq!(status["import_status"], "finished", "{status}");
    let (_, archive) = server.export_and_download(ROOT_TOKEN, id);
    assert_eq!(read_archive(&archive).relations["issues"].len(), 60);
    assert_eq!(generation_folders(temp.path(), id).len(), 1, "the new only");
    assert_eq!(
        files_under(&temp.path().join("blobs/imports")),
        Vec::<String>::new()
    );
}
