//! The import/export API over real HTTP against the local server: happy
//! paths, GitLab's status codes, bad input, other users' projects, restarts.

use e2e::{client, fixture_archive, read_archive, tar_gz, Server, ROOT_TOKEN};
use serde_json::{json, Value};

fn small_archive(issues: &[&str]) -> Vec<u8> {
    let lines: String = issues.iter().map(|l| format!("{l}\n")).collect();
    tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", br#"{"description":"small"}"#),
        ("tree/project/issues.ndjson", lines.as_bytes()),
    ])
}

const ISSUE_1: &str = r#"{"iid":1,"title":"first","notes":[{"note":"hi"}]}"#;
const ISSUE_2: &str = r#"{"iid":2,"title":"second","unknown_field":{"kept":true}}"#;

fn project_routes(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", format!("/projects/{id}")),
        ("POST", format!("/projects/{id}/export")),
        ("GET", format!("/projects/{id}/export")),
        ("GET", format!("/projects/{id}/export/download")),
        ("GET", format!("/projects/{id}/import")),
        ("POST", format!("/projects/{id}/export_relations")),
        ("GET", format!("/projects/{id}/export_relations/status")),
        (
            "GET",
            format!("/projects/{id}/export_relations/download?relation=labels"),
        ),
        ("GET", format!("/projects/{id}/relation-imports")),
        ("PUT", format!("/projects/{id}/export_schedule")),
        ("GET", format!("/projects/{id}/export_schedule")),
        ("DELETE", format!("/projects/{id}/export_schedule")),
        (
            "GET",
            format!("/projects/{id}/export_schedule/archives/x/download"),
        ),
        ("DELETE", format!("/projects/{id}")),
    ]
}

fn call(server: &Server, token: Option<&str>, method: &str, path: &str) -> (u16, Value) {
    let response = match method {
        "POST" => server.post(token, path),
        "GET" => server.get(token, path),
        _ => {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = client().request(method, server.url(path));
            if let Some(token) = token {
                request = request.header("PRIVATE-TOKEN", token);
            }
            request.send().unwrap()
        }
    };
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn every_route_requires_a_valid_token() {
    let server = Server::start();
    let status = server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", "p")]);
    let id = status["id"].to_string();
    let mut routes = project_routes(&id);
    for path in [
        "/projects/import",
        "/projects/import-relation",
        "/projects/remote-import",
        "/projects/remote-import-s3",
        "/projects/import/upload-url",
        "/projects/import/authorize",
        "/users",
        "/users/1/personal_access_tokens",
    ] {
        routes.push(("POST", path.into()));
    }
    routes.push(("GET", "/projects".into()));
    routes.push(("GET", "/user".into()));
    routes.push(("DELETE", "/personal_access_tokens/1".into()));
    routes.push(("DELETE", "/personal_access_tokens/self".into()));
    for (method, path) in &routes {
        for token in [None, Some("wrong-token")] {
            let (status, body) = call(&server, token, method, path);
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert_eq!(body, json!({"message": "401 Unauthorized"}));
        }
    }
    // GitLab's other ways of passing a token work too.
    let bearer = client()
        .get(server.url(&format!("/projects/{id}/import")))
        .bearer_auth(ROOT_TOKEN)
        .send()
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let query = client()
        .get(server.url(&format!("/projects/{id}/import?private_token={ROOT_TOKEN}")))
        .send()
        .unwrap();
    assert_eq!(query.status(), 200);
}

#[test]
fn someone_elses_project_looks_like_a_missing_one() {
    let server = Server::start();
    let (_, alice) = server.create_user("alice");
    let (_, bob) = server.create_user("bob");
    let status = server.import_and_wait(&alice, small_archive(&[ISSUE_1]), &[("path", "secret")]);
    assert_eq!(status["import_status"], "finished");
    assert_eq!(status["path_with_namespace"], "alice/secret");
    let id = status["id"].to_string();
    server.export_and_download(&alice, status["id"].as_u64().unwrap());

    for reference in [id.as_str(), "alice%2Fsecret", "999", "alice%2Fnothing"] {
        for (method, path) in project_routes(reference) {
            let (status, body) = call(&server, Some(&bob), method, &path);
            assert_eq!(status, 404, "{method} {path}");
            assert_eq!(
                body,
                json!({"message": "404 Project Not Found"}),
                "{method} {path}"
            );
        }
    }
    // The administrator sees every project; the owner sees it by path too.
    assert_eq!(
        call(
            &server,
            Some(ROOT_TOKEN),
            "GET",
            &format!("/projects/{id}/import")
        )
        .0,
        200
    );
    assert_eq!(
        call(
            &server,
            Some(&alice),
            "GET",
            "/projects/alice%2Fsecret/export"
        )
        .0,
        200
    );
    // Importing into someone else's namespace is refused.
    let response = server.import(
        &bob,
        small_archive(&[ISSUE_1]),
        &[("path", "x"), ("namespace", "alice")],
    );
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().unwrap(),
        json!({"message": "404 Namespace Not Found"})
    );
}

#[test]
fn export_status_and_download_follow_gitlab() {
    let server = Server::start();
    let status = server.import_and_wait(
        ROOT_TOKEN,
        small_archive(&[ISSUE_1, ISSUE_2]),
        &[("path", "demo"), ("name", "Demo")],
    );
    let id = status["id"].as_u64().unwrap();
    assert_eq!(status["name"], "Demo");
    assert_eq!(status["description"], "small");

    let (code, before) = call(
        &server,
        Some(ROOT_TOKEN),
        "GET",
        &format!("/projects/{id}/export"),
    );
    assert_eq!(code, 200);
    assert_eq!(before["export_status"], "none");
    assert!(before.get("_links").is_none());
    let (code, body) = call(
        &server,
        Some(ROOT_TOKEN),
        "GET",
        &format!("/projects/{id}/export/download"),
    );
    assert_eq!(code, 404);
    assert_eq!(body, json!({"message": "404 Not found or has expired"}));

    // description overrides the project's in the archive (form field, as curl --form sends).
    let form = reqwest::blocking::multipart::Form::new().text("description", "Foo Bar");
    let response = client()
        .post(server.url(&format!("/projects/{id}/export")))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().unwrap(),
        json!({"message": "202 Accepted"})
    );
    let finished = server.wait_export(ROOT_TOKEN, id);
    assert_eq!(finished["export_status"], "finished");
    for field in [
        "id",
        "description",
        "name",
        "name_with_namespace",
        "path",
        "path_with_namespace",
        "created_at",
    ] {
        assert!(finished.get(field).is_some(), "{field} in {finished}");
    }
    assert_eq!(finished["name_with_namespace"], "Administrator / Demo");
    assert_eq!(
        finished["_links"]["api_url"],
        server.url(&format!("/projects/{id}/export/download"))
    );
    let (_, archive) = server.download(ROOT_TOKEN, id);
    let content = read_archive(&archive);
    assert_eq!(content.attributes["description"], "Foo Bar");
    assert_eq!(content.relations["issues"].len(), 2);
    assert_eq!(
        content.relations["issues"][1]["unknown_field"],
        json!({"kept": true})
    );
}

#[test]
fn signed_download_urls_cannot_be_tampered_with() {
    let server = Server::start_with(&["--download-redirect"]);
    let status = server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", "p")]);
    let id = status["id"].as_u64().unwrap();
    server.export_and_download(ROOT_TOKEN, id);
    let redirect = server.get(Some(ROOT_TOKEN), &format!("/projects/{id}/export/download"));
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let tampered = [
        location.replace("signature=", "signature=00"),
        location.replace("expires=", "expires=9"),
        location.replace("export.tar.gz?", "other.tar.gz?"),
        location.split('?').next().unwrap().to_owned(),
    ];
    for url in tampered {
        let response = client().get(&url).send().unwrap();
        assert_eq!(response.status(), 403, "{url}");
    }
    assert_eq!(client().get(&location).send().unwrap().status(), 200);
}

/// Downloads honour one byte range as S3 and GitLab's Workhorse do (`curl
/// -C -` goes on where a download broke off, a migration's destination
/// asks for the rest of a file): straight from the server and behind a
/// signed URL.
#[test]
fn downloads_honour_a_byte_range() {
    for redirect in [false, true] {
        let server = if redirect {
            Server::start_with(&["--download-redirect"])
        } else {
            Server::start()
        };
        let status =
            server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", "p")]);
        let id = status["id"].as_u64().unwrap();
        let (_, whole) = server.export_and_download(ROOT_TOKEN, id);
        let size = whole.len();
        let path = format!("/projects/{id}/export/download");
        let url = if redirect {
            let answer = server.get(Some(ROOT_TOKEN), &path);
            answer.headers()["location"].to_str().unwrap().to_owned()
        } else {
            server.url(&path)
        };
        let ranged = |range: &str| {
            client()
                .get(&url)
                .header("PRIVATE-TOKEN", ROOT_TOKEN)
                .header("Range", range)
                .send()
                .unwrap()
        };
        for (range, from, to) in [
            ("bytes=10-", 10, size - 1),
            ("bytes=0-9", 0, 9),
            (&*format!("bytes=-{}", size - 3), 3, size - 1),
            (&*format!("bytes=5-{}", size * 2), 5, size - 1),
            (&*format!("bytes=-{}", size + 100), 0, size - 1),
        ] {
            let answer = ranged(range);
            assert_eq!(answer.status(), 206, "{range}");
            let headers = answer.headers().clone();
            assert_eq!(
                headers["content-range"],
                format!("bytes {from}-{to}/{size}").as_str(),
                "{range}"
            );
            assert_eq!(
                headers["content-length"],
                (to - from + 1).to_string().as_str()
            );
            assert_eq!(headers["accept-ranges"], "bytes");
            assert_eq!(&answer.bytes().unwrap()[..], &whole[from..=to], "{range}");
        }
        // Past the end: nothing to send.
        let answer = ranged(&format!("bytes={size}-"));
        assert_eq!(answer.status(), 416);
        assert_eq!(
            answer.headers()["content-range"],
            format!("bytes */{size}").as_str()
        );
        // What the server may ignore (RFC 9110): the whole file.
        for range in ["bytes=0-1,4-5", "items=0-3", "bytes=x-"] {
            let answer = ranged(range);
            assert_eq!(answer.status(), 200, "{range}");
            assert_eq!(&answer.bytes().unwrap()[..], &whole[..], "{range}");
        }
    }
}

#[test]
fn expired_download_urls_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &["--download-ttl", "0", "--download-redirect"]);
    let status = server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", "p")]);
    let id = status["id"].as_u64().unwrap();
    assert_eq!(
        server
            .post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"))
            .status(),
        202
    );
    server.wait_export(ROOT_TOKEN, id);
    let redirect = server.get(Some(ROOT_TOKEN), &format!("/projects/{id}/export/download"));
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    // The URL expires at the second it was made.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(client().get(&location).send().unwrap().status(), 403);
}

#[test]
fn import_rejects_bad_requests() {
    let server = Server::start();
    server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", "taken")]);
    type Case<'a> = (Vec<(&'a str, &'a str)>, bool, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("path", "nofile")], false, 400, "file is missing"),
        (vec![], true, 400, "path is missing"),
        (
            vec![("path", "../evil")],
            true,
            400,
            "path can contain only",
        ),
        (vec![("path", "taken")], true, 400, "has already been taken"),
        (
            vec![("path", "x"), ("namespace", "nobody")],
            true,
            404,
            "404 Namespace Not Found",
        ),
    ];
    for (fields, with_file, status, message) in cases {
        let response = if with_file {
            server.import(ROOT_TOKEN, small_archive(&[ISSUE_1]), &fields)
        } else {
            let mut form = reqwest::blocking::multipart::Form::new();
            for (k, v) in &fields {
                form = form.text(k.to_string(), v.to_string());
            }
            client()
                .post(server.url("/projects/import"))
                .header("PRIVATE-TOKEN", ROOT_TOKEN)
                .multipart(form)
                .send()
                .unwrap()
        };
        assert_eq!(response.status(), status, "{fields:?}");
        let body: Value = response.json().unwrap();
        assert!(
            e2e::error_text(&body).contains(message),
            "{fields:?}: {body}"
        );
    }
    // Not multipart at all.
    let response = client()
        .post(server.url("/projects/import"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&json!({"path": "x"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    // Nothing of the refused uploads is left behind.
    let leftovers = std::fs::read_dir(server.data_dir.join("blobs/imports"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0);
}

#[test]
fn corrupt_archives_fail_with_a_clear_error_and_leave_nothing() {
    let server = Server::start();
    let good = small_archive(&[ISSUE_1]);
    let mut truncated = fixture_archive("complex");
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not-gzip",
            b"this is not an archive".to_vec(),
            "not a gzip archive",
        ),
        ("truncated", truncated, "corrupt or truncated"),
        (
            "bad-line",
            tar_gz(&[
                ("VERSION", b"0.2.4"),
                ("tree/project.json", b"{}"),
                (
                    "tree/project/issues.ndjson",
                    format!("{ISSUE_1}\n{{\"iid\":2,\n").as_bytes(),
                ),
            ]),
            "tree/project/issues.ndjson: line 2: invalid JSON",
        ),
        (
            "no-version",
            tar_gz(&[("tree/project.json", b"{}")]),
            "no VERSION file",
        ),
        (
            "traversal",
            tar_gz(&[
                ("VERSION", b"0.2.4"),
                ("tree/project.json", b"{}"),
                ("uploads/../../../etc/x", b"x"),
            ]),
            "unsafe path",
        ),
    ];
    for (path, archive, message) in cases {
        let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", path)]);
        assert_eq!(status["import_status"], "failed", "{path}: {status}");
        let error = status["import_error"].as_str().unwrap();
        assert!(error.contains(message), "{path}: {error}");
        // No partial records are ever exported.
        let (_, exported) = server.export_and_download(ROOT_TOKEN, status["id"].as_u64().unwrap());
        let content = read_archive(&exported);
        assert!(
            content.relations.is_empty(),
            "{path}: {:?}",
            content.relations.keys()
        );
    }
    // A failed overwrite keeps what the project had.
    let first = server.import_and_wait(ROOT_TOKEN, good, &[("path", "keep")]);
    assert_eq!(first["import_status"], "finished");
    let failed = server.import_and_wait(
        ROOT_TOKEN,
        b"garbage".to_vec(),
        &[("path", "keep"), ("overwrite", "true")],
    );
    assert_eq!(failed["import_status"], "failed");
    assert_eq!(failed["id"], first["id"]);
    let (_, exported) = server.export_and_download(ROOT_TOKEN, first["id"].as_u64().unwrap());
    assert_eq!(read_archive(&exported).relations["issues"].len(), 1);
    // And a good overwrite replaces it.
    let replaced = server.import_and_wait(
        ROOT_TOKEN,
        small_archive(&[ISSUE_1, ISSUE_2]),
        &[("path", "keep"), ("overwrite", "true")],
    );
    assert_eq!(replaced["import_status"], "finished");
    let (_, exported) = server.export_and_download(ROOT_TOKEN, first["id"].as_u64().unwrap());
    assert_eq!(read_archive(&exported).relations["issues"].len(), 2);
    // The server still serves.
    assert_eq!(server.get(Some(ROOT_TOKEN), "/user").status(), 200);
}

#[test]
fn queued_work_survives_a_crash_and_restart() {
    let temp = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(temp.path(), &["--workers", "0"]);
    let response = server.import(
        ROOT_TOKEN,
        fixture_archive("complex"),
        &[("path", "queued")],
    );
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().unwrap()["id"].as_u64().unwrap();
    let (_, status) = call(
        &server,
        Some(ROOT_TOKEN),
        "GET",
        &format!("/projects/{id}/import"),
    );
    assert_eq!(status["import_status"], "scheduled");
    server.kill();

    let server = Server::start_in(temp.path(), &["--workers", "1"]);
    let status = server.wait_import(ROOT_TOKEN, id);
    assert_eq!(status["import_status"], "finished", "{status}");
    assert_eq!(
        server
            .post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"))
            .status(),
        202
    );
    let server = server.restart(&["--workers", "0"]);
    let (_, status) = call(
        &server,
        Some(ROOT_TOKEN),
        "GET",
        &format!("/projects/{id}/export"),
    );
    // The one worker may have claimed it before the kill: unfinished either way.
    let unfinished = ["queued", "started"];
    assert!(
        unfinished.contains(&status["export_status"].as_str().unwrap()),
        "{status}"
    );
    // How far it got (our addition), of every record of the project.
    let records: usize = e2e::fixture_relations("complex")
        .values()
        .map(Vec::len)
        .sum();
    let progress = &status["export_progress"];
    assert_eq!(progress["records_total"], records, "{status}");
    assert!(progress["records_exported"].as_u64().unwrap() <= records as u64);
    let server = server.restart(&["--workers", "2"]);
    let status = server.wait_export(ROOT_TOKEN, id);
    assert_eq!(status["export_status"], "finished");
    assert!(status.get("export_progress").is_none(), "{status}");
    let (_, archive) = server.download(ROOT_TOKEN, id);
    assert_eq!(
        read_archive(&archive).relations,
        e2e::fixture_relations("complex")
    );
}

#[test]
fn admin_api_is_for_administrators() {
    let server = Server::start();
    let (_, alice) = server.create_user("alice");
    let response = client()
        .post(server.url("/users"))
        .header("PRIVATE-TOKEN", &alice)
        .json(&json!({"username": "mallory"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = client()
        .post(server.url("/users"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&json!({"username": "alice"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);
    let me: Value = server.get(Some(&alice), "/user").json().unwrap();
    assert_eq!(me["username"], "alice");
    // Grape's catch-all route (GitLab's lib/api/api.rb): `error!('404 Not Found')`.
    let (status, body) = call(&server, Some(&alice), "GET", "/no/such/route");
    assert_eq!((status, body), (404, json!({"error": "404 Not Found"})));
}

#[test]
fn export_scheduling_is_rate_limited_per_user() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &["--export-rate-limit", "2"]);
    let (_, alice) = server.create_user("alice");
    let status = server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", "p")]);
    let id = status["id"].as_u64().unwrap();
    let mine = server.import_and_wait(&alice, small_archive(&[ISSUE_1]), &[("path", "q")]);
    let alice_id = mine["id"].as_u64().unwrap();

    assert_eq!(
        server
            .post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"))
            .status(),
        202
    );
    // Relations exports are not limited (GitLab's lib/api/project_export.rb
    // applies `project_export` to full exports only): direct transfer calls
    // them once per project.
    for _ in 0..3 {
        assert_eq!(
            server
                .post(
                    Some(ROOT_TOKEN),
                    &format!("/projects/{id}/export_relations")
                )
                .status(),
            202
        );
    }
    assert_eq!(
        server
            .post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"))
            .status(),
        202
    );
    let refused = server.post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"));
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        refused.json::<Value>().unwrap(),
        // GitLab's rate limiter helper: render_api_error!({ error: … }, 429).
        json!({"message": {"error": "This endpoint has been requested too many times. Try again later."}})
    );
    // Another user has a limit of their own.
    assert_eq!(
        server
            .post(Some(&alice), &format!("/projects/{alice_id}/export"))
            .status(),
        202
    );
}

/// GitLab's `project_download_export` limit (lib/api/project_export.rb:
/// `check_rate_limit! :project_download_export, scope: [current_user,
/// user_project.namespace]`, 1 a minute by default), counted before the
/// file is looked for; `Retry-After` is the limit's interval
/// (lib/api/helpers.rb `too_many_requests!`). Relations downloads are not
/// limited.
#[test]
fn export_downloads_are_rate_limited_per_user_and_namespace() {
    let temp = tempfile::tempdir().unwrap();
    let server = Server::start_in(temp.path(), &["--download-rate-limit", "1"]);
    let (_, alice) = server.create_user("alice");
    let status = server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", "p")]);
    let id = status["id"].as_u64().unwrap();
    let mine = server.import_and_wait(&alice, small_archive(&[ISSUE_1]), &[("path", "q")]);
    let alice_id = mine["id"].as_u64().unwrap();
    server.export_and_download(ROOT_TOKEN, id);

    let refused = server.get(Some(ROOT_TOKEN), &format!("/projects/{id}/export/download"));
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "60");
    assert_eq!(
        refused.json::<Value>().unwrap(),
        json!({"message": {"error": "This endpoint has been requested too many times. Try again later."}})
    );
    // Another user in another namespace has a limit of their own; the first
    // attempt counts even when there is nothing to download.
    let (status, body) = call(
        &server,
        Some(&alice),
        "GET",
        &format!("/projects/{alice_id}/export/download"),
    );
    assert_eq!(
        (status, body),
        (404, json!({"message": "404 Not found or has expired"}))
    );
    let (status, _) = call(
        &server,
        Some(&alice),
        "GET",
        &format!("/projects/{alice_id}/export/download"),
    );
    assert_eq!(status, 429);
    // Relations exports and their downloads are not limited.
    for _ in 0..2 {
        let path = format!("/projects/{id}/export_relations");
        assert_eq!(server.post(Some(ROOT_TOKEN), &path).status(), 202);
        server.wait_relations_export(ROOT_TOKEN, id);
        let (status, _, _) = server.download_relation(ROOT_TOKEN, id, "relation=issues");
        assert_eq!(status, 200);
    }
}

/// Numbers and keys as written, on every path that reads
/// `tree/project.json` as a whole: an export with a `description` override
/// and a pretty-printed legacy `project.json` keep
/// `123456789012345678901234567890`, `1.10`, duplicate keys and `1e999999`
/// (GitLab stores attributes as given; a float round trip would not).
#[test]
fn exact_numbers_and_keys_survive_every_path() {
    let server = Server::start();
    let attributes = r#"{"description":"d","big":123456789012345678901234567890,"x":1.10,"x":2,"huge":1e999999}"#;
    let archive = e2e::tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", attributes.as_bytes()),
        (
            "tree/project/issues.ndjson",
            format!("{ISSUE_1}\n").as_bytes(),
        ),
    ]);
    let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", "exact")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    let id = status["id"].as_u64().unwrap();
    let project: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{id}"))
        .json()
        .unwrap();
    assert_eq!(project["description"], "d");
    let form = reqwest::blocking::multipart::Form::new().text("description", "over");
    let response = client()
        .post(server.url(&format!("/projects/{id}/export")))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    server.wait_export(ROOT_TOKEN, id);
    let (_, exported) = server.download(ROOT_TOKEN, id);
    let written = e2e::archive_entry(&exported, "tree/project.json").unwrap();
    assert_eq!(
        String::from_utf8(written).unwrap(),
        r#"{"description":"over","big":123456789012345678901234567890,"x":1.10,"x":2,"huge":1e999999}"#
    );

    let legacy = format!(
        "{{\n  \"description\": \"legacy\",\n  \"big\": 123456789012345678901234567890,\n  \"x\": 1.10,\n  \"x\": 2,\n  \"huge\": 1e999999,\n  \"issues\": [{ISSUE_1}]\n}}\n"
    );
    let archive = e2e::tar_gz(&[("VERSION", b"0.2.4"), ("project.json", legacy.as_bytes())]);
    let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", "legacy-exact")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    let id = status["id"].as_u64().unwrap();
    let (_, exported) = server.export_and_download(ROOT_TOKEN, id);
    let written = e2e::archive_entry(&exported, "tree/project.json").unwrap();
    assert_eq!(
        String::from_utf8(written).unwrap(),
        r#"{"description":"legacy","big":123456789012345678901234567890,"x":1.10,"x":2,"huge":1e999999}"#
    );
}

/// `override_params[...]` as form fields (curl --form, GitLab's docs):
/// applied to the imported project and its export.
#[test]
fn override_params_apply_to_an_uploaded_import() {
    let server = Server::start();
    let status = server.import_and_wait(
        ROOT_TOKEN,
        small_archive(&[ISSUE_1]),
        &[
            ("path", "overridden"),
            ("override_params[description]", "From the form"),
            ("override_params[request_access_enabled]", "false"),
            ("override_params[ci_config_path]", ""),
        ],
    );
    assert_eq!(status["import_status"], "finished", "{status}");
    let id = status["id"].as_u64().unwrap();
    let project: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{id}"))
        .json()
        .unwrap();
    assert_eq!(project["description"], "From the form");
    let (_, archive) = server.export_and_download(ROOT_TOKEN, id);
    let written = e2e::archive_entry(&archive, "tree/project.json").unwrap();
    // An empty override is dropped (GitLab's `present_override_params`).
    assert_eq!(
        String::from_utf8(written).unwrap(),
        r#"{"description":"From the form","request_access_enabled":false}"#
    );
    let refused = server.import(
        ROOT_TOKEN,
        small_archive(&[ISSUE_1]),
        &[
            ("path", "refused"),
            ("override_params[build_timeout]", "soon"),
        ],
    );
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().unwrap(),
        json!({"error": "override_params[build_timeout] is invalid"})
    );
}

/// GitLab's `import/authorize` is Workhorse's handshake
/// (lib/api/helpers.rb `require_gitlab_workhorse!`): `403` without
/// Workhorse. Our presigned upload is `import/upload-url`.
#[test]
fn gitlab_workhorse_authorize_is_forbidden_as_without_workhorse() {
    let server = Server::start();
    let (status, body) = call(
        &server,
        Some(ROOT_TOKEN),
        "POST",
        "/projects/import/authorize",
    );
    assert_eq!((status, body), (403, json!({"message": "403 Forbidden"})));
    let (status, _) = call(&server, None, "POST", "/projects/import/authorize");
    assert_eq!(status, 401);
}

#[test]
fn expired_tokens_are_refused() {
    let server = Server::start();
    let (alice_id, _) = server.create_user("alice");
    // GitLab's tokens expire at midnight (UTC) of their expiry date.
    let today = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .unwrap();
    let today = String::from_utf8(today.stdout).unwrap().trim().to_owned();
    let token: Value = client()
        .post(server.url(&format!("/users/{alice_id}/personal_access_tokens")))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&json!({"name": "old", "expires_at": today}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(token["expires_at"], today);
    let response = server.get(token["token"].as_str(), "/user");
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().unwrap(),
        json!({"message": "401 Unauthorized"})
    );
}

#[test]
fn projects_are_listed_and_shown_like_gitlab() {
    let server = Server::start();
    for path in ["a", "b", "c"] {
        let status =
            server.import_and_wait(ROOT_TOKEN, small_archive(&[ISSUE_1]), &[("path", path)]);
        assert_eq!(status["import_status"], "finished");
    }
    let (_, stranger) = server.create_user("stranger");

    let project: Value = server
        .get(Some(ROOT_TOKEN), "/projects/root%2Fb")
        .json()
        .unwrap();
    assert_eq!(project["id"], 2);
    assert_eq!(project["path_with_namespace"], "root/b");
    assert_eq!(project["namespace"]["full_path"], "root");
    assert_eq!(project["web_url"], format!("{}/root/b", server.base));
    assert_eq!(server.get(Some(&stranger), "/projects/2").status(), 404);
    assert_eq!(server.get(None, "/projects/2").status(), 401);
    assert_eq!(server.get(None, "/projects").status(), 401);

    let page = server.get(Some(ROOT_TOKEN), "/projects?owned=true&per_page=2&page=2");
    assert_eq!(page.status(), 200);
    let header = |name: &str| page.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(
        (
            header("x-total"),
            header("x-total-pages"),
            header("x-page"),
            header("x-per-page")
        ),
        ("3".into(), "2".into(), "2".into(), "2".into())
    );
    assert_eq!(
        (header("x-next-page"), header("x-prev-page")),
        ("".into(), "1".into())
    );
    let link = header("link");
    assert!(
        link.contains(&format!(
            "<{}/api/v4/projects?owned=true&page=1&per_page=2>; rel=\"prev\"",
            server.base
        )),
        "{link}"
    );
    assert!(!link.contains("rel=\"next\""), "{link}");
    let listed: Vec<Value> = page.json().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["path"], "c");

    // GitLab's `search`: name or path, whatever the case, paged alike.
    for (query, expected) in [
        ("search=B", vec!["b"]),
        ("search=ROOT%2F&per_page=2&page=2", vec!["c"]),
        ("search=nothing-like-it", vec![]),
        ("search=", vec!["a", "b", "c"]),
    ] {
        let found = server.get(Some(ROOT_TOKEN), &format!("/projects?{query}"));
        assert_eq!(found.status(), 200, "{query}");
        let total = found.headers()["x-total"].to_str().unwrap().to_owned();
        let paths: Vec<String> = found
            .json::<Vec<Value>>()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(paths, expected, "{query}");
        if query == "search=ROOT%2F&per_page=2&page=2" {
            assert_eq!(total, "3");
        }
    }
    let theirs: Vec<Value> = server
        .get(Some(&stranger), "/projects?search=a")
        .json()
        .unwrap();
    assert!(theirs.is_empty());

    // A stranger sees none of them; bad paging is a 400.
    let theirs: Vec<Value> = server.get(Some(&stranger), "/projects").json().unwrap();
    assert!(theirs.is_empty());
    assert_eq!(
        server.get(Some(ROOT_TOKEN), "/projects?page=0").status(),
        400
    );
    assert_eq!(
        server
            .get(Some(ROOT_TOKEN), "/projects?owned=maybe")
            .status(),
        400
    );
}

#[test]
fn revoked_tokens_are_refused() {
    let server = Server::start();
    let (alice_id, alice) = server.create_user("alice");
    let (_, bob) = server.create_user("bob");
    let second: Value = client()
        .post(server.url(&format!("/users/{alice_id}/personal_access_tokens")))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&json!({"name": "second"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let second_id = second["id"].as_u64().unwrap();
    let second_token = second["token"].as_str().unwrap().to_owned();
    assert_eq!(server.get(Some(&second_token), "/user").status(), 200);

    let revoke = |token: &str, path: &str| {
        client()
            .delete(server.url(path))
            .header("PRIVATE-TOKEN", token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Someone else's token is not found; the owner revokes it.
    let path = format!("/personal_access_tokens/{second_id}");
    assert_eq!(revoke(&bob, &path), 404);
    assert_eq!(server.get(Some(&second_token), "/user").status(), 200);
    assert_eq!(revoke(&alice, &path), 204);
    assert_eq!(server.get(Some(&second_token), "/user").status(), 401);
    assert_eq!(revoke(&second_token, "/personal_access_tokens/self"), 401);
    assert_eq!(revoke(ROOT_TOKEN, "/personal_access_tokens/999999"), 404);
    // A method a route does not have: GitLab's JSON 405.
    let wrong = client()
        .delete(server.url("/user"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(
        wrong.json::<Value>().unwrap(),
        // Grape's own answer for a known path and another method.
        json!({"error": "405 Not Allowed"})
    );
    assert_eq!(revoke(ROOT_TOKEN, "/personal_access_tokens/nope"), 404);

    // A token revokes itself; an administrator revokes anyone's.
    assert_eq!(revoke(&bob, "/personal_access_tokens/self"), 204);
    assert_eq!(server.get(Some(&bob), "/user").status(), 401);
    assert_eq!(server.get(Some(&alice), "/user").status(), 200);
    assert_eq!(revoke(&alice, "/personal_access_tokens/self"), 204);
    assert_eq!(server.get(Some(&alice), "/user").status(), 401);
    assert_eq!(
        client()
            .delete(server.url("/personal_access_tokens/self"))
            .send()
            .unwrap()
            .status(),
        401
    );
}

/// An export of many pieces (compressed in parallel) is one ordinary gzip
/// stream: `gzip -t`, `tar -tzf` and Python's tarfile in stream mode (which
/// reads only a first gzip member) read all of it.
#[test]
fn a_parallel_compressed_export_reads_with_the_standard_tools() {
    let server = Server::start();
    let issues = 15_000;
    let status = server.import_and_wait(
        ROOT_TOKEN,
        e2e::synthetic_archive(issues),
        &[("path", "tools")],
    );
    let id = status["id"].as_u64().unwrap();
    let response = server.post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"));
    assert_eq!(response.status(), 202);
    server.wait_export(ROOT_TOKEN, id);
    let (status, _, archive) =
        server.fetch_file(ROOT_TOKEN, &format!("/projects/{id}/export/download"));
    assert_eq!(status, 200);
    let tar_bytes = e2e::gunzip(&archive).len();
    assert!(
        tar_bytes > 4 * 1024 * 1024,
        "{tar_bytes} bytes: several pieces"
    );
    e2e::standard_tools_read(&archive, issues);
}

/// `DELETE /projects/:id` (GitLab's `lib/api/projects.rb`: `202 Accepted`):
/// the project answers `404` at once and its path takes a new import; what
/// it held is deleted behind; the administrator may delete anyone's.
#[test]
fn a_project_is_deleted_like_gitlab() {
    let server = Server::start();
    let (_, alice) = server.create_user("alice");
    let status = server.import_and_wait(&alice, small_archive(&[ISSUE_1]), &[("path", "gone")]);
    let id = status["id"].as_u64().unwrap();
    server.export_and_download(&alice, id);
    let response = server.post(Some(&alice), &format!("/projects/{id}/export_relations"));
    assert_eq!(response.status(), 202);
    server.wait_relations_export(&alice, id);
    let held = |what: &str| server.data_dir.join(format!("blobs/{what}/{id}")).exists();
    assert!(held("exports"));

    let (status, body) = call(&server, Some(&alice), "DELETE", &format!("/projects/{id}"));
    assert_eq!((status, body), (202, json!({"message": "202 Accepted"})));
    for path in [format!("/projects/{id}"), "/projects/alice%2Fgone".into()] {
        let (status, body) = call(&server, Some(&alice), "GET", &path);
        assert_eq!(
            (status, body),
            (404, json!({"message": "404 Project Not Found"}))
        );
    }
    let (status, _) = call(&server, Some(&alice), "DELETE", &format!("/projects/{id}"));
    assert_eq!(status, 404, "a second deletion");
    let (_, listed) = call(&server, Some(&alice), "GET", "/projects");
    assert_eq!(listed, json!([]));
    // The path is free at once.
    let again = server.import_and_wait(&alice, small_archive(&[ISSUE_2]), &[("path", "gone")]);
    assert_eq!(again["import_status"], "finished");
    assert_ne!(again["id"].as_u64(), Some(id));
    // Its content goes behind the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while held("exports") || held("projects") {
        assert!(std::time::Instant::now() < deadline, "content still there");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The administrator deletes someone else's project.
    let other = again["id"].as_u64().unwrap();
    let (status, _) = call(
        &server,
        Some(ROOT_TOKEN),
        "DELETE",
        &format!("/projects/{other}"),
    );
    assert_eq!(status, 202);
    let (status, _) = call(&server, Some(&alice), "GET", &format!("/projects/{other}"));
    assert_eq!(status, 404);
}

/// `GET /projects/:id?statistics=true`: GitLab's `statistics` object with the
/// sizes held here (`lib/api/entities/project_statistics.rb`), plus our
/// `records_size` and `exports_size`, all counted in `storage_size`.
#[test]
fn project_statistics_count_what_is_held() {
    let server = Server::start();
    let issues = format!("{ISSUE_1}\n{ISSUE_2}\n");
    let bundle = vec![7u8; 3_000];
    let upload = vec![1u8; 500];
    let lfs = vec![2u8; 700];
    let archive = tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", br#"{"description":"sized"}"#),
        ("tree/project/issues.ndjson", issues.as_bytes()),
        ("project.bundle", &bundle),
        ("project.wiki.bundle", b"wiki"),
        ("uploads/abc/picture.png", &upload),
        ("lfs-objects/0123456789abcdef", &lfs),
    ]);
    let status = server.import_and_wait(ROOT_TOKEN, archive, &[("path", "sized")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    let id = status["id"].as_u64().unwrap();
    let statistics = |query: &str| -> Value {
        let project: Value = server
            .get(Some(ROOT_TOKEN), &format!("/projects/{id}{query}"))
            .json()
            .unwrap();
        project["statistics"].clone()
    };
    assert_eq!(statistics(""), Value::Null, "only when asked");
    assert_eq!(statistics("?statistics=false"), Value::Null);
    let before = statistics("?statistics=true");
    assert_eq!(
        before,
        json!({
            "commit_count": 0,
            "storage_size": issues.len() + 3_000 + 4 + 500 + 700,
            "repository_size": 3_000,
            "wiki_size": 4,
            "lfs_objects_size": 700,
            "job_artifacts_size": 0,
            "pipeline_artifacts_size": 0,
            "packages_size": 0,
            "snippets_size": 0,
            "uploads_size": 500,
            "container_registry_size": 0,
            "records_size": issues.len(),
            "exports_size": 0,
        })
    );
    let (_, archive) = server.export_and_download(ROOT_TOKEN, id);
    let after = statistics("?statistics=true");
    assert_eq!(after["exports_size"], archive.len());
    assert_eq!(
        after["storage_size"].as_u64().unwrap(),
        before["storage_size"].as_u64().unwrap() + archive.len() as u64
    );
    let listed: Value = server
        .get(Some(ROOT_TOKEN), "/projects?statistics=true")
        .json()
        .unwrap();
    assert_eq!(listed[0]["statistics"], after);
    let response = server.get(
        Some(ROOT_TOKEN),
        &format!("/projects/{id}?statistics=maybe"),
    );
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().unwrap(),
        json!({"error": "statistics is invalid"})
    );
}
