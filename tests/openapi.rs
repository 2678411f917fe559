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

/// (METHOD, path) of every route the router serves, from its table, and
/// the signed blob route of the local server.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let mut routes: BTreeSet<(String, String)> = shared::http::routes()
        .into_iter()
        .map(|route| {
            (
                route.method.as_str().to_owned(),
                format!("/api/v4{}", route.path),
            )
        })
        .collect();
    for method in ["GET", "PUT"] {
        routes.insert((method.to_owned(), "/-/blobs/{key}".to_owned()));
    }
    routes.insert(("POST".to_owned(), shared::http::GRAPHQL_PATH.to_owned()));
    routes
}

/// (METHOD, path) of every HTTP API event of `resource` in `template.yaml`.
fn routes_in_template(resource: &str) -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let mut routes = BTreeSet::new();
    let mut in_resource = false;
    let mut method = None;
    for line in text.lines() {
        // A resource starts at two spaces of indentation.
        if let Some(name) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) {
            in_resource = name.trim_end_matches(':') == resource;
            continue;
        }
        if !in_resource {
            continue;
        }
        let line = line.trim();
        if let Some(m) = line.strip_prefix("Method: ") {
            method = Some(m.to_owned());
        } else if let Some(path) = line.strip_prefix("Path: ") {
            if let Some(method) = method.take() {
                routes.insert((method, path.to_owned()));
            }
        }
    }
    routes
}

#[test]
fn each_function_deploys_exactly_its_routes() {
    use shared::http::Function;
    let mut seen = 0;
    for function in Function::ALL {
        let mut served: BTreeSet<(String, String)> = shared::http::routes()
            .into_iter()
            .filter(|route| route.function == function)
            .map(|route| {
                (
                    route.method.as_str().to_owned(),
                    format!("/api/v4{}", route.path),
                )
            })
            .collect();
        let api_routes = served.len();
        if function == Function::Status {
            // The console's static files, outside the API.
            for path in shared::http::CONSOLE_PATHS {
                served.insert(("GET".to_owned(), path.to_owned()));
            }
            // GitLab's GraphQL, beside the API.
            served.insert(("POST".to_owned(), shared::http::GRAPHQL_PATH.to_owned()));
        }
        let deployed = routes_in_template(function.resource());
        assert_eq!(
            deployed, served,
            "{function:?}: template.yaml against the router"
        );
        seen += api_routes;
    }
    assert_eq!(seen, shared::http::routes().len());
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
