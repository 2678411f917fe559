//! Scheduled exports on the local server: the opt-in routes, and the
//! server's own timer exporting and keeping the last archives.

use std::time::{Duration, Instant};

use e2e::{client, fixture_archive, read_archive, Server, ROOT_TOKEN};
use serde_json::Value;

fn import(server: &Server, path: &str) -> u64 {
    let status = server.import_and_wait(ROOT_TOKEN, fixture_archive("complex"), &[("path", path)]);
    assert_eq!(status["import_status"], "finished", "{status}");
    status["id"].as_u64().unwrap()
}

fn put(
    server: &Server,
    token: Option<&str>,
    id: u64,
    form: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut request = client()
        .put(server.url(&format!("/projects/{id}/export_schedule")))
        .form(form);
    if let Some(token) = token {
        request = request.header("PRIVATE-TOKEN", token);
    }
    request.send().unwrap()
}

fn delete(server: &Server, token: &str, id: u64) -> u16 {
    client()
        .delete(server.url(&format!("/projects/{id}/export_schedule")))
        .header("PRIVATE-TOKEN", token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn projects_opt_in_and_out_of_scheduled_exports() {
    let server = Server::start_with(&["--export-schedule-every", "0"]);
    let id = import(&server, "scheduled");
    let (_, stranger) = server.create_user("stranger");
    let path = format!("/projects/{id}/export_schedule");

    assert_eq!(server.get(Some(ROOT_TOKEN), &path).status(), 404);
    let created = put(&server, Some(ROOT_TOKEN), id, &[("keep", "2")]);
    assert_eq!(created.status(), 200);
    let created: Value = created.json().unwrap();
    assert_eq!(created["project_id"], id);
    assert_eq!(created["export_type"], "full");
    assert_eq!(created["keep"], 2);
    assert_eq!(created["last_scheduled_at"], Value::Null);
    assert_eq!(created["archives"], Value::Array(vec![]));
    let shown: Value = server.get(Some(ROOT_TOKEN), &path).json().unwrap();
    assert_eq!(shown, created);

    let relations: Value = put(
        &server,
        Some(ROOT_TOKEN),
        id,
        &[("relations", "true"), ("batched", "true")],
    )
    .json()
    .unwrap();
    assert_eq!(relations["export_type"], "relations");
    assert_eq!(relations["keep"], 3, "the default");
    assert_eq!(relations["created_at"], created["created_at"]);

    // Bad input, someone else's project, no token.
    assert_eq!(
        put(&server, Some(ROOT_TOKEN), id, &[("keep", "0")]).status(),
        400
    );
    assert_eq!(
        put(&server, Some(ROOT_TOKEN), id, &[("keep", "101")]).status(),
        400
    );
    assert_eq!(
        put(&server, Some(ROOT_TOKEN), id, &[("batched", "true")]).status(),
        400
    );
    assert_eq!(
        put(&server, Some(ROOT_TOKEN), id, &[("relations", "maybe")]).status(),
        400
    );
    assert_eq!(put(&server, Some(&stranger), id, &[]).status(), 404);
    assert_eq!(server.get(Some(&stranger), &path).status(), 404);
    assert_eq!(delete(&server, &stranger, id), 404);
    assert_eq!(put(&server, None, id, &[]).status(), 401);

    assert_eq!(delete(&server, ROOT_TOKEN, id), 204);
    assert_eq!(delete(&server, ROOT_TOKEN, id), 404);
    let gone = server.get(Some(ROOT_TOKEN), &path);
    assert_eq!(gone.status(), 404);
    assert_eq!(
        gone.json::<Value>().unwrap()["message"],
        "404 Export schedule Not Found"
    );
}

#[test]
fn the_timer_exports_opted_in_projects_and_keeps_the_last_archives() {
    let server = Server::start_with(&["--export-schedule-every", "1"]);
    let id = import(&server, "ticking");
    let other = import(&server, "quiet");
    assert_eq!(
        put(&server, Some(ROOT_TOKEN), id, &[("keep", "2")]).status(),
        200
    );

    // Wait for four ticks' exports to finish.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ticks = std::collections::BTreeSet::new();
    loop {
        let schedule: Value = server
            .get(Some(ROOT_TOKEN), &format!("/projects/{id}/export_schedule"))
            .json()
            .unwrap();
        if let Some(at) = schedule["last_scheduled_at"].as_str() {
            ticks.insert(at.to_owned());
        }
        let archives = schedule["archives"].as_array().unwrap().len();
        if ticks.len() >= 4 && archives == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{schedule}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Stop ticking (a restart without the timer); queued work resumes.
    let server = server.restart(&["--export-schedule-every", "0"]);
    let status = server.wait_export(ROOT_TOKEN, id);
    assert_eq!(status["export_status"], "finished", "{status}");

    let schedule: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{id}/export_schedule"))
        .json()
        .unwrap();
    let archives = schedule["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 2, "{schedule}");
    for archive in archives {
        let url = archive["download_url"].as_str().unwrap();
        let path = url.split("/api/v4").nth(1).unwrap();
        let (status, disposition, bytes) = server.fetch_file(ROOT_TOKEN, path);
        assert_eq!(status, 200);
        assert!(
            disposition.contains("_root_ticking_export.tar.gz"),
            "{disposition}"
        );
        assert!(read_archive(&bytes).relations.contains_key("issues"));
    }
    // Only the kept archives are stored: older ticks' were deleted. The
    // kill may have come between an export's finish and its prune: then
    // its message comes back after the restart and prunes, soon after.
    let exports = server.data_dir.join(format!("blobs/exports/{id}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while archive_files(&exports) != 2 {
        assert!(Instant::now() < deadline, "{}", exports.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A project that did not opt in was never exported.
    let quiet: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{other}/export"))
        .json()
        .unwrap();
    assert_eq!(quiet["export_status"], "none");
}

/// Export archives stored under `dir`, at any depth.
fn archive_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            if path.is_dir() {
                archive_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|e| e == "gz"))
            }
        })
        .sum()
}
