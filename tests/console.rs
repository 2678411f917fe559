//! The console at `/`: its files and headers as the server sends them, and
//! the whole flow in a real browser (headless Chromium driven by Selenium,
//! `tests/browser/console_flow.py`).

use std::path::Path;
use std::process::Command;

use e2e::{client, fixture_archive, repo_root, venv_python, Server, ROOT_TOKEN};

#[test]
fn the_console_is_served_with_a_strict_policy() {
    let server = Server::start();
    let root = server.base.trim_end_matches("/api/v4");
    let page = client().get(format!("{root}/")).send().unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(policy.starts_with("default-src 'self';"), "{policy}");
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
    assert!(policy.contains("frame-ancestors 'none'"));
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("x-content-type-options"), "nosniff");
    let text = page.text().unwrap();
    assert!(text.contains(r#"<script type="module" src="/-/console/console.js">"#));

    for (file, kind) in [
        ("console.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("console.css", "text/css"),
    ] {
        let asset = client()
            .get(format!("{root}/-/console/{file}"))
            .send()
            .unwrap();
        assert_eq!(asset.status(), 200, "{file}");
        let content_type = asset.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{file}: {content_type}");
        assert!(asset.headers().contains_key("content-security-policy"));
    }
    for missing in ["nope.js", "..%2Fconsole.rs", "index.html.bak"] {
        let answer = client()
            .get(format!("{root}/-/console/{missing}"))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 404, "{missing}");
    }
    // The API is unchanged beside it: no token, no answer.
    assert_eq!(server.get(None, "/user").status(), 401);
    // The console never answers for the API's CORS: none is sent.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, server.url("/user"))
        .header("Origin", "https://elsewhere.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .unwrap();
    assert!(!preflight
        .headers()
        .contains_key("access-control-allow-origin"));
}

fn browser_tool(names: &[&str]) -> String {
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            if Path::new(dir).join(name).exists() {
                return name.to_string();
            }
        }
    }
    panic!(
        "{} not found: run `bash infra/test.sh` (it installs Debian's chromium and \
         chromium-driver), or `apt-get install chromium chromium-driver`",
        names.join(" or ")
    );
}

/// Signs in, imports a fixture from the page and sees every relation's bar
/// reach its total, exports and downloads (the file equal to the API's),
/// migrates the project from the server to itself, deletes it, signs out:
/// see `tests/browser/console_flow.py`. `CONSOLE_SCREENSHOTS=docs/console`
/// saves each view there.
#[test]
fn the_console_works_in_a_real_browser() {
    browser_tool(&["chromium", "chromium-browser"]);
    browser_tool(&["chromedriver"]);
    let server = Server::start_with(&["--allow-local-requests"]);
    let root = server.base.trim_end_matches("/api/v4").to_owned();
    let temp = tempfile::tempdir().unwrap();
    let archive = temp.path().join("complex_export.tar.gz");
    std::fs::write(&archive, fixture_archive("complex")).unwrap();
    let mut command = Command::new(venv_python());
    command
        .arg(repo_root().join("tests/browser/console_flow.py"))
        .arg(&root)
        .arg(ROOT_TOKEN)
        .arg(&archive);
    if let Ok(dir) = std::env::var("CONSOLE_SCREENSHOTS") {
        command.arg(repo_root().join(dir));
    }
    let output = command.output().expect("python runs");
    assert!(
        output.status.success(),
        "the console flow failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
