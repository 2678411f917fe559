//! Real clients, unchanged, against the local server: python-gitlab, and the
//! curl commands of the seed pages run as written (host, token and the
//! import file's path swapped).

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{fixture_archive, repo_root, venv_python, Server, ROOT_TOKEN};
use serde_json::Value;

fn write_fixture_archive(dir: &Path) -> PathBuf {
    let path = dir.join("complex_export.tar.gz");
    std::fs::write(&path, fixture_archive("complex")).unwrap();
    path
}

#[test]
fn python_gitlab_drives_the_local_server_unchanged() {
    let server = Server::start();
    let temp = tempfile::tempdir().unwrap();
    let archive = write_fixture_archive(temp.path());
    let output = Command::new(venv_python())
        .arg(repo_root().join("tests/clients/python_gitlab_flow.py"))
        .arg(&server.base)
        .arg(ROOT_TOKEN)
        .arg(&archive)
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python-gitlab flow failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn python_gitlab_migrates_a_project_between_two_servers() {
    let source = Server::start();
    let imported = source.import_and_wait(
        ROOT_TOKEN,
        fixture_archive("complex"),
        &[("path", "pg-origin")],
    );
    assert_eq!(imported["import_status"], "finished");
    let destination = Server::start_with(&["--allow-local-requests"]);
    let output = Command::new(venv_python())
        .arg(repo_root().join("tests/clients/python_gitlab_bulk_import.py"))
        .arg(&source.base)
        .arg(&destination.base)
        .arg(ROOT_TOKEN)
        .arg("root/pg-origin")
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python-gitlab bulk import failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The seed pages' curl commands, in page order, continuation lines joined.
fn seed_curls(file: &str) -> Vec<String> {
    let seeds = repo_root().join("tests/fixtures/gitlab-docs").join(file);
    let text =
        std::fs::read_to_string(&seeds).unwrap_or_else(|err| panic!("{}: {err}", seeds.display()));
    let mut commands = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("curl ") {
            continue;
        }
        let mut command = line.trim().to_owned();
        while command.ends_with('\\') {
            command.pop();
            command.push(' ');
            command.push_str(lines.next().unwrap_or_default().trim());
        }
        commands.push(command);
    }
    commands
}

/// Runs one seed command with only the host, the token and the import
/// file's path swapped, in `dir`; returns its output.
fn run_seed(server: &Server, command: &str, dir: &Path, archive: &Path) -> String {
    let swapped = command
        .replace("https://gitlab.example.com", &server.base)
        .replace("<your_access_token>", ROOT_TOKEN)
        .replace("9koXpg98eAheJpvBs5tK", ROOT_TOKEN)
        .replace("@/path/to/file", &format!("@{}", archive.display()));
    let output = Command::new("bash")
        .args([
            "-c",
            &format!("{swapped} --silent --show-error --fail-with-body"),
        ])
        .current_dir(dir)
        .output()
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{swapped}\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

/// Re-runs a status command until `field` is done.
fn poll(server: &Server, command: &str, dir: &Path, archive: &Path, field: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = json(&run_seed(server, command, dir, archive));
        let value = status[field].as_str().unwrap_or_default().to_owned();
        if value == "finished" || value == "failed" {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_seed_curl_commands_work_as_written() {
    let import_export = seed_curls("project_import_export_api.txt");
    let relations = seed_curls("project_relations_export_api.txt");
    assert_eq!((import_export.len(), relations.len()), (5, 3));

    let server = Server::start();
    let work = tempfile::tempdir().unwrap();
    let uploads = tempfile::tempdir().unwrap();
    let archive = write_fixture_archive(uploads.path());
    // The pages use projects 1 and 5: create five, and export the fifth.
    for i in 1..=5 {
        let status = server.import_and_wait(
            ROOT_TOKEN,
            fixture_archive("complex"),
            &[("path", &format!("seed-{i}"))],
        );
        assert_eq!(status["id"], i);
    }
    server.export_and_download(ROOT_TOKEN, 5);
    let dir = work.path();

    // Project import/export page, in its order.
    let [schedule, export_status, download, import, import_status] = &import_export[..] else {
        unreachable!()
    };
    assert_eq!(
        json(&run_seed(&server, schedule, dir, &archive)),
        json(r#"{"message": "202 Accepted"}"#)
    );
    let status = poll(&server, export_status, dir, &archive, "export_status");
    assert_eq!(status["export_status"], "finished", "{status}");
    assert!(status["_links"]["api_url"].is_string());
    run_seed(&server, download, dir, &archive);
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("export.tar.gz"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].ends_with("_root_seed-5_export.tar.gz"),
        "{names:?}"
    );
    let imported = json(&run_seed(&server, import, dir, &archive));
    assert_eq!(imported["path"], "api-project");
    assert_eq!(imported["import_status"], "scheduled");
    let status = poll(&server, import_status, dir, &archive, "import_status");
    assert_eq!(status["import_status"], "finished", "{status}");

    // Project relations export page.
    let [schedule, relations_status, download] = &relations[..] else {
        unreachable!()
    };
    assert_eq!(
        json(&run_seed(&server, schedule, dir, &archive)),
        json(r#"{"message": "202 Accepted"}"#)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let status = json(&run_seed(&server, relations_status, dir, &archive));
        let entries = status.as_array().unwrap();
        if !entries.is_empty() && entries.iter().all(|e| e["status"] == 1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run_seed(&server, download, dir, &archive);
    let labels = std::fs::read(dir.join("labels.ndjson.gz")).expect("labels.ndjson.gz");
    assert!(!e2e::gunzip(&labels).is_empty());
}
