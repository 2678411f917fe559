//! The OpenAPI document (`openapi.yaml`) stays true: it names every route
//! the server has, the server serves it, and schemathesis, fuzzing every
//! documented operation against a live server, finds no server error and
//! no response outside the document.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{fixture_archive, Server, ROOT_TOKEN};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (METHOD, path) of every route built in `shared/src/http/mod.rs`.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(repo_root().join("shared/src/http/mod.rs")).unwrap();
    let mut routes = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        let Some(path) = call.split('"').nth(1).filter(|_| {
            call.trim_start().starts_with("&api(") || call.trim_start().starts_with('"')
        }) else {
            continue;
        };
        let path = if call.trim_start().starts_with("&api(") {
            format!("/api/v4{path}")
        } else {
            path.to_owned()
        };
        let path = path.replace("{*key}", "{key}");
        let body = call.split(".route(").next().unwrap();
        for method in ["get", "post", "put", "delete"] {
            let called = body.contains(&format!(" {method}(handlers::"))
                || body.contains(&format!("\n{method}(handlers::"))
                || body.contains(&format!("({method}(handlers::"))
                || body.contains(&format!(".{method}(handlers::"));
            if called {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// (METHOD, path) of every operation in `openapi.yaml`.
fn routes_in_document() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("openapi.yaml")).unwrap();
    let mut routes = BTreeSet::new();
    let mut in_paths = false;
    let mut path = String::new();
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            path = key
                .trim_end_matches(':')
                .trim_matches(['"', '\''])
                .to_owned();
        } else if let Some(key) = line.strip_prefix("    ").filter(|l| !l.starts_with(' ')) {
            let method = key.trim_end_matches(':');
            if ["get", "post", "put", "delete", "patch"].contains(&method) {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[test]
fn the_document_names_every_route_and_nothing_else() {
    let code = routes_in_code();
    let document = routes_in_document();
    assert!(code.len() > 20, "routes found in the code: {code:?}");
    let undocumented: Vec<_> = code.difference(&document).collect();
    let unserved: Vec<_> = document.difference(&code).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "routes without documentation: {undocumented:?}\ndocumented routes the server lacks: {unserved:?}"
    );
}

#[test]
fn the_server_serves_the_document() {
    let server = Server::start();
    let response = server.get(None, "/openapi.yaml");
    assert_eq!(response.status(), 200);
    let served = response.text().unwrap();
    let file = std::fs::read_to_string(repo_root().join("openapi.yaml")).unwrap();
    assert_eq!(served, file);
}

#[test]
fn schemathesis_finds_no_server_errors() {
    let schemathesis = repo_root().join(".venv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run `bash infra/test.sh` (it installs schemathesis into .venv)",
        schemathesis.display()
    );
    let server = Server::start();
    // Something real behind the ids the fuzzer tries.
    let status = server.import_and_wait(
        ROOT_TOKEN,
        fixture_archive("complex"),
        &[("path", "fuzzed")],
    );
    assert_eq!(status["import_status"], "finished");
    let reports = tempfile::tempdir().unwrap();
    let output = Command::new(&schemathesis)
        .current_dir(reports.path())
        .arg("run")
        .arg(repo_root().join("openapi.yaml"))
        .args(["--url", &server.base])
        .args(["--header", &format!("PRIVATE-TOKEN: {ROOT_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "30", "--seed", "7", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "30", "--max-redirects", "0"])
        // Revoking tokens would revoke the fuzzer's own.
        .args(["--exclude-path-regex", "personal_access_tokens"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
