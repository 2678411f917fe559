//! The smaller ways a client could bend the server: names without limits,
//! forwarded headers from anyone, usernames differing in case, tokens born
//! expired, a BOM before the first record, form fields that are not UTF-8.

use e2e::{client, read_archive, tar_gz, Server, ROOT_TOKEN};
use reqwest::blocking::multipart;
use serde_json::{json, Value};

#[test]
fn project_names_have_gitlab_limits() {
    let server = Server::start();
    let archive = || e2e::synthetic_archive(1);
    let long = "n".repeat(256);
    let response = server.import(ROOT_TOKEN, archive(), &[("path", "p1"), ("name", &long)]);
    assert_eq!(response.status(), 400);
    let body: Value = response.json().unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("too long"),
        "{body}"
    );
    let response = server.import(
        ROOT_TOKEN,
        archive(),
        &[("path", "p2"), ("name", "<script>")],
    );
    assert_eq!(response.status(), 400);
    // A field far over any name is refused before it is read whole.
    let huge = "x".repeat(2 << 20);
    let response = server.import(ROOT_TOKEN, archive(), &[("path", "p3"), ("name", &huge)]);
    assert_eq!(response.status(), 413);
    let listed: Value = server.get(Some(ROOT_TOKEN), "/projects").json().unwrap();
    assert_eq!(listed, json!([]), "nothing was created");
    // GitLab's own characters pass.
    let status = server.import_and_wait(
        ROOT_TOKEN,
        archive(),
        &[("path", "p4"), ("name", "My project_1.0 + more 🚀")],
    );
    assert_eq!(status["name"], "My project_1.0 + more 🚀", "{status}");
}

#[test]
fn non_utf8_form_fields_are_invalid_not_missing() {
    let server = Server::start();
    let form = multipart::Form::new()
        .part("path", multipart::Part::bytes(vec![0xff, 0xfe, b'a']))
        .part(
            "file",
            multipart::Part::bytes(e2e::synthetic_archive(1)).file_name("export.tar.gz"),
        );
    let response = client()
        .post(server.url("/projects/import"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().unwrap();
    assert_eq!(body, json!({"error": "path is invalid"}));
}

fn export_links(server: &Server, id: u64, headers: &[(&str, &str)]) -> Value {
    let mut request = client()
        .get(server.url(&format!("/projects/{id}/export")))
        .header("PRIVATE-TOKEN", ROOT_TOKEN);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().unwrap().json::<Value>().unwrap()["_links"].clone()
}

#[test]
fn forwarded_headers_count_only_from_a_trusted_proxy() {
    let forged = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
    ];
    for trusted in [false, true] {
        let flags: &[&str] = if trusted {
            &["--trust-forwarded-headers"]
        } else {
            &[]
        };
        let server = Server::start_with(flags);
        let status =
            server.import_and_wait(ROOT_TOKEN, e2e::synthetic_archive(1), &[("path", "linked")]);
        let id = status["id"].as_u64().unwrap();
        server.export_and_download(ROOT_TOKEN, id);
        let links = export_links(&server, id, &forged);
        let api_url = links["api_url"].as_str().unwrap();
        if trusted {
            assert!(api_url.starts_with("https://evil.example/"), "{api_url}");
        } else {
            assert!(api_url.starts_with(&server.base), "{api_url}");
        }
    }
}

#[test]
fn usernames_are_unique_whatever_their_case() {
    let server = Server::start();
    server.create_user("Alice");
    let response = client()
        .post(server.url("/users"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&json!({"username": "alice", "name": "Other"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);
}

#[test]
fn a_token_created_already_expired_is_not_active() {
    let server = Server::start();
    let (id, _) = server.create_user("bob");
    let token: Value = client()
        .post(server.url(&format!("/users/{id}/personal_access_tokens")))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&json!({"name": "old", "scopes": ["api"], "expires_at": "2020-01-01"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(token["active"], false, "{token}");
    let secret = token["token"].as_str().unwrap();
    assert_eq!(server.get(Some(secret), "/user").status(), 401);
}

#[test]
fn a_bom_before_the_first_record_is_not_part_of_it() {
    let server = Server::start();
    let archive = tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", b"{}"),
        (
            "tree/project/issues.ndjson",
            b"\xEF\xBB\xBF{\"iid\":1}\n{\"iid\":2}\n",
        ),
    ]);
    let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", "bom")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    let (_, exported) = server.export_and_download(ROOT_TOKEN, status["id"].as_u64().unwrap());
    assert_eq!(
        read_archive(&exported).relations["issues"],
        vec![json!({"iid": 1}), json!({"iid": 2})]
    );
}
