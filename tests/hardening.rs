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

/// A form's fields besides its file are capped in number and in total
/// size, and refused with `413` as they arrive, not once they are held.
#[test]
fn form_floods_are_refused_before_they_are_held() {
    let server = Server::start();
    let idle = server.peak_rss();
    let send = |path: &str, form: multipart::Form| {
        client()
            .post(server.url(path))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .multipart(form)
            .send()
            .unwrap()
    };
    // Many small fields.
    let mut many = multipart::Form::new().text("path", "many");
    for n in 0..1100 {
        many = many.text(format!("field{n}"), "x");
    }
    let many = many.part(
        "file",
        multipart::Part::bytes(e2e::synthetic_archive(1)).file_name("export.tar.gz"),
    );
    let response = send("/projects/import", many);
    assert_eq!(response.status(), 413);
    let body: Value = response.json().unwrap();
    assert_eq!(body["message"], "the request has more than 1024 parameters");
    // Fields of 60 KiB each, far past 1 MiB together (13,107 of them were
    // 806 MB): refused at the first MiB, on both routes that read forms.
    // (Under the 64 MiB the server reads on after a 413, so that this
    // client reads the answer rather than a closed connection.)
    let field = "x".repeat(60 * 1024);
    for path in ["/projects/import", "/projects/remote-import"] {
        let mut big = multipart::Form::new().text("path", "big");
        for n in 0..900 {
            big = big.text(format!("field{n}"), field.clone());
        }
        let response = send(path, big);
        assert_eq!(response.status(), 413, "{path}");
        let body: Value = response.json().unwrap();
        assert_eq!(
            body["message"], "the request's parameters are larger than 1048576 bytes",
            "{path}"
        );
    }
    let peak = server.peak_rss();
    eprintln!(
        "form floods of 54 MB: peak RSS {} MiB (idle {} MiB)",
        peak >> 20,
        idle >> 20
    );
    assert!(peak < idle + (100 << 20), "{} MiB", peak >> 20);
    // A form under the caps still works.
    let mut fine = multipart::Form::new().text("path", "fine");
    for n in 0..100 {
        fine = fine.text(format!("field{n}"), "x");
    }
    let fine = fine.part(
        "file",
        multipart::Part::bytes(e2e::synthetic_archive(1)).file_name("export.tar.gz"),
    );
    assert_eq!(send("/projects/import", fine).status(), 201);
    let listed: Value = server.get(Some(ROOT_TOKEN), "/projects").json().unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

/// Grape merges a JSON body into the parameters only when it is a hash:
/// `null` (what client libraries send for a call without options), `[]`
/// or `3` mean no parameters.
#[test]
fn json_bodies_that_are_not_objects_mean_no_parameters() {
    let server = Server::start();
    let status = server.import_and_wait(ROOT_TOKEN, e2e::synthetic_archive(1), &[("path", "j")]);
    let id = status["id"].as_u64().unwrap();
    let post_json = |path: &str, body: &'static str| {
        client()
            .post(server.url(path))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .unwrap()
    };
    let export = format!("/projects/{id}/export");
    for body in ["null", "[]", "3", "\"text\"", ""] {
        assert_eq!(post_json(&export, body).status(), 202, "{body:?}");
        server.wait_export(ROOT_TOKEN, id);
    }
    assert_eq!(post_json(&export, "{").status(), 400);
    // The nested routes read it the same way: no parameters, so the
    // required ones are missing.
    let response = post_json("/bulk_imports", "null");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("is missing"),
        "{body}"
    );
}

/// A hash or an array where Grape declares a scalar is `400 {"error":
/// "<name> is invalid"}`, never stored as text nor dropped.
#[test]
fn arrays_and_hashes_in_place_of_text_are_invalid() {
    let server = Server::start();
    let post = |body: Value| {
        client()
            .post(server.url("/projects/remote-import"))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .json(&body)
            .send()
            .unwrap()
    };
    let url = "https://example.com/export.tar.gz";
    for (body, name) in [
        (
            json!({"url": url, "path": "a", "override_params": {"description": ["a", "b"]}}),
            "override_params[description]",
        ),
        (
            json!({"url": url, "path": "a", "override_params": {"description": {"x": "y"}}}),
            "override_params[description]",
        ),
        (
            json!({"url": url, "path": "a", "override_params": {"build_timeout": [600]}}),
            "override_params[build_timeout]",
        ),
        (json!({"url": url, "path": ["a"]}), "path"),
        (json!({"url": {"a": "b"}, "path": "a"}), "url"),
    ] {
        let response = post(body.clone());
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().unwrap();
        assert_eq!(
            answer,
            json!({"error": format!("{name} is invalid")}),
            "{body}"
        );
    }
    let listed: Value = server.get(Some(ROOT_TOKEN), "/projects").json().unwrap();
    assert_eq!(listed, json!([]), "nothing was created");
}

/// A key no string can hold (an unpaired surrogate escape) is kept as
/// written, with overrides too: the byte edit never decodes it.
#[test]
fn overrides_apply_beside_keys_no_string_holds() {
    let server = Server::start();
    let attributes = br#"{"\ud800":1,"description":"old","visibility_level":0}"#;
    let archive = tar_gz(&[("VERSION", b"0.2.4"), ("tree/project.json", attributes)]);
    let status = server.import_and_wait(
        ROOT_TOKEN,
        archive,
        &[
            ("path", "surrogate"),
            ("override_params[description]", "new"),
        ],
    );
    assert_eq!(status["import_status"], "finished", "{status}");
    let id = status["id"].as_u64().unwrap();
    let (_, exported) = server.export_and_download(ROOT_TOKEN, id);
    let written = e2e::archive_entry(&exported, "tree/project.json").unwrap();
    assert_eq!(
        String::from_utf8(written).unwrap(),
        r#"{"\ud800":1,"description":"new","visibility_level":0}"#
    );
    let _ = read_archive;
}
