//! Archives over HTTP on the local server: remote imports from a URL, the
//! presigned upload flow (`import/upload-url`), and exports sent to a URL.

use e2e::{client, fixture_archive, fixture_relations, read_archive, Server, ROOT_TOKEN};
use serde_json::Value;

fn post_form(
    server: &Server,
    token: Option<&str>,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::blocking::Response {
    let mut request = client().post(server.url(path)).form(form);
    if let Some(token) = token {
        request = request.header("PRIVATE-TOKEN", token);
    }
    request.send().unwrap()
}

/// Imports the fixture, exports it, and returns (project id, the signed
/// URL the archive downloads from).
fn exported_fixture(server: &Server) -> (u64, String) {
    let status = server.import_and_wait(
        ROOT_TOKEN,
        fixture_archive("complex"),
        &[("path", "source")],
    );
    let id = status["id"].as_u64().unwrap();
    assert_eq!(
        server
            .post(Some(ROOT_TOKEN), &format!("/projects/{id}/export"))
            .status(),
        202
    );
    assert_eq!(
        server.wait_export(ROOT_TOKEN, id)["export_status"],
        "finished"
    );
    let redirect = server.get(Some(ROOT_TOKEN), &format!("/projects/{id}/export/download"));
    assert_eq!(redirect.status(), 302);
    (
        id,
        redirect.headers()["location"].to_str().unwrap().to_owned(),
    )
}

fn relations_of(server: &Server, id: u64) -> std::collections::BTreeMap<String, Vec<Value>> {
    read_archive(&server.export_and_download(ROOT_TOKEN, id).1).relations
}

#[test]
fn remote_import_fetches_the_archive_from_a_url() {
    // The archive is served by this same server, on 127.0.0.1.
    let server = Server::start_with(&["--download-redirect", "--allow-local-requests"]);
    let (_, url) = exported_fixture(&server);

    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/remote-import",
        &[("url", &url), ("path", "fetched"), ("name", "Fetched")],
    );
    assert_eq!(response.status(), 201);
    let created: Value = response.json().unwrap();
    assert_eq!(created["import_status"], "scheduled");
    assert_eq!(created["name"], "Fetched");
    let id = created["id"].as_u64().unwrap();
    let status = server.wait_import(ROOT_TOKEN, id);
    assert_eq!(status["import_status"], "finished", "{status}");
    assert_eq!(relations_of(&server, id), fixture_relations("complex"));

    // A URL that refuses the file: 400 at once, as GitLab's `HEAD` of it
    // finds, and no project.
    let missing = url.replace("export.tar.gz", "missing.tar.gz");
    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/remote-import",
        &[("url", &missing), ("path", "missing")],
    );
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().unwrap()["message"],
        "Failed to retrive headers: 403 Forbidden"
    );
    let status = server
        .get(Some(ROOT_TOKEN), "/projects/root%2Fmissing")
        .status();
    assert_eq!(status, 404);

    // Bad requests.
    for form in [
        vec![("path", "x")],
        vec![("url", "file:///etc/passwd"), ("path", "x")],
        vec![("url", "not a url"), ("path", "x")],
        vec![("url", url.as_str())],
        vec![("url", url.as_str()), ("path", "x"), ("overwrite", "maybe")],
    ] {
        let response = post_form(&server, Some(ROOT_TOKEN), "/projects/remote-import", &form);
        assert_eq!(response.status(), 400, "{form:?}");
    }
    let response = post_form(
        &server,
        None,
        "/projects/remote-import",
        &[("url", &url), ("path", "x")],
    );
    assert_eq!(response.status(), 401);
    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/remote-import-s3",
        &[("path", "x")],
    );
    assert_eq!(response.status(), 400);
}

#[test]
fn authorized_uploads_start_the_import_when_they_land() {
    let server = Server::start();
    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/import/upload-url",
        &[("path", "big")],
    );
    assert_eq!(response.status(), 201);
    let authorized: Value = response.json().unwrap();
    assert_eq!(authorized["import_status"], "scheduled");
    assert_eq!(authorized["upload"]["method"], "PUT");
    let url = authorized["upload"]["url"].as_str().unwrap().to_owned();
    let id = authorized["id"].as_u64().unwrap();

    // Waiting for the upload: nothing runs yet.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let status: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{id}/import"))
        .json()
        .unwrap();
    assert_eq!(status["import_status"], "scheduled");

    // A tampered or download-only signature cannot upload.
    let tampered = url.replace("signature=", "signature=00");
    // Refused uploads are answered before their body is read, and the
    // server then closes the connection: each upload gets its own, so the
    // next request never lands on one being closed.
    let unpooled = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let put = |url: &str| {
        unpooled
            .put(url)
            .body(fixture_archive("complex"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put(&tampered), 403);
    assert_eq!(put(url.split('?').next().unwrap()), 403);

    // The upload URL is no download URL, even with a file name added, and
    // takes no parameter beyond its own.
    let get = |url: &str| client().get(url).send().unwrap().status().as_u16();
    assert_eq!(get(&url), 403);
    assert_eq!(get(&format!("{url}&filename=%00upload")), 403);
    assert_eq!(get(&format!("{url}&filename=")), 403);
    assert_eq!(put(&format!("{url}&extra=1")), 403);

    // Two uploads at the same moment: one lands, the other is refused.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| put(&url));
        let b = s.spawn(|| put(&url));
        (a.join().unwrap(), b.join().unwrap())
    });
    let mut answers = [a, b];
    answers.sort();
    assert!(
        answers == [200, 403] || answers == [200, 409],
        "{answers:?}"
    );
    let status = server.wait_import(ROOT_TOKEN, id);
    assert_eq!(status["import_status"], "finished", "{status}");
    assert_eq!(relations_of(&server, id), fixture_relations("complex"));
    // Spent once its upload landed.
    assert_eq!(put(&url), 403);

    let response = post_form(
        &server,
        None,
        "/projects/import/upload-url",
        &[("path", "x")],
    );
    assert_eq!(response.status(), 401);
    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/import/upload-url",
        &[],
    );
    assert_eq!(response.status(), 400);
}

#[test]
fn an_export_is_sent_to_its_upload_url() {
    let server = Server::start_with(&["--allow-local-requests"]);
    let status = server.import_and_wait(
        ROOT_TOKEN,
        fixture_archive("complex"),
        &[("path", "origin")],
    );
    let origin = status["id"].as_u64().unwrap();
    // The receiving end: another project's presigned upload.
    let authorized: Value = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/import/upload-url",
        &[("path", "copy")],
    )
    .json()
    .unwrap();
    let copy = authorized["id"].as_u64().unwrap();
    let url = authorized["upload"]["url"].as_str().unwrap();

    let export = format!("/projects/{origin}/export");
    for bad in [
        vec![("upload[url]", "ftp://example.com/x")],
        vec![("upload[url]", url), ("upload[http_method]", "GET")],
    ] {
        assert_eq!(
            post_form(&server, Some(ROOT_TOKEN), &export, &bad).status(),
            400,
            "{bad:?}"
        );
    }
    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        &export,
        &[("upload[url]", url), ("upload[http_method]", "PUT")],
    );
    assert_eq!(response.status(), 202);
    assert_eq!(
        server.wait_export(ROOT_TOKEN, origin)["export_status"],
        "finished"
    );
    let status = server.wait_import(ROOT_TOKEN, copy);
    assert_eq!(status["import_status"], "finished", "{status}");
    assert_eq!(relations_of(&server, copy), fixture_relations("complex"));
}

#[test]
fn urls_into_this_machine_or_a_private_network_are_refused_by_default() {
    let server = Server::start();
    let status =
        server.import_and_wait(ROOT_TOKEN, fixture_archive("light"), &[("path", "origin")]);
    let export = format!("/projects/{}/export", status["id"].as_u64().unwrap());
    let localhost = "Requests to localhost are not allowed";
    let local_network = "Requests to the local network are not allowed";
    for (url, reason) in [
        ("http://127.0.0.1:9/x.tar.gz", localhost),
        ("http://localhost/x.tar.gz", localhost),
        ("http://LOCALHOST./x.tar.gz", localhost),
        ("http://api.localhost/x.tar.gz", localhost),
        ("http://0.0.0.0/x.tar.gz", localhost),
        ("http://[::1]/x.tar.gz", localhost),
        ("http://2130706433/x.tar.gz", localhost),
        ("http://169.254.169.254/latest/meta-data/", local_network),
        ("http://10.1.2.3/x.tar.gz", local_network),
        ("http://172.16.0.1/x.tar.gz", local_network),
        ("https://192.168.1.1/x.tar.gz", local_network),
        ("http://100.64.0.1/x.tar.gz", local_network),
        ("http://[fd00:ec2::254]/x.tar.gz", local_network),
        ("http://[::ffff:10.0.0.1]/x.tar.gz", local_network),
    ] {
        for (path, form, parameter) in [
            (
                "/projects/remote-import",
                vec![("url", url), ("path", "fetched")],
                "url",
            ),
            (export.as_str(), vec![("upload[url]", url)], "upload[url]"),
        ] {
            let response = post_form(&server, Some(ROOT_TOKEN), path, &form);
            assert_eq!(response.status(), 400, "{url}");
            let body: Value = response.json().unwrap();
            // A remote import's URL is checked as GitLab's RemoteFile does:
            // the scheme first, then the address.
            let expected = match parameter {
                "url" if url.starts_with("http:") => {
                    "File url is blocked: Only allowed schemes are https".to_owned()
                }
                "url" => format!("File url is blocked: {reason}"),
                _ => format!("{parameter} is blocked: {reason}"),
            };
            assert_eq!(body["message"], expected, "{url}");
        }
    }
    // remote-import-s3: the bucket and region become the host name.
    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/remote-import-s3",
        &[
            ("region", "us-east-1"),
            ("bucket_name", "10.0.0.5/"),
            ("file_key", "x.tar.gz"),
            ("access_key_id", "AKIA"),
            ("secret_access_key", "secret"),
            ("path", "fetched"),
        ],
    );
    assert_eq!(response.status(), 400);
    let body: Value = response.json().unwrap();
    assert_eq!(body["error"], "bucket_name is invalid");
    // Nothing was created or scheduled by the refused requests.
    assert_eq!(
        server
            .get(Some(ROOT_TOKEN), "/projects/root%2Ffetched")
            .status(),
        404
    );
    let export_status: Value = server.get(Some(ROOT_TOKEN), &export).json().unwrap();
    assert_eq!(export_status["export_status"], "none");
}

/// A one-thread HTTP server answering every request with `head` (a status
/// line and headers) and no body; returns its base URL.
fn answering(head: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    base
}

/// `POST /projects/remote-import` checks the file before it answers, as
/// GitLab's `RemoteFile` strategy and `RemoteFileValidator` do
/// (`app/services/import/gitlab_projects/file_acquisition_strategies/remote_file.rb`,
/// `app/validators/import/gitlab_projects/remote_file_validator.rb`):
/// `https` only, then a `HEAD` whose content type and size must be an
/// archive's; each refusal is a `400` with GitLab's words, and no project.
#[test]
fn remote_imports_check_the_file_before_creating_anything() {
    let strict = Server::start();
    for (url, message) in [
        (
            "http://example.com/export.tar.gz",
            "File url is blocked: Only allowed schemes are https",
        ),
        (
            "ftp://example.com/export.tar.gz",
            "File url is blocked: Only allowed schemes are https",
        ),
        ("not a url", "File url is blocked: URI is invalid"),
        (
            "https://127.0.0.1/x.tar.gz",
            "File url is blocked: Requests to localhost are not allowed",
        ),
    ] {
        let form = [("url", url), ("path", "checked")];
        let response = post_form(&strict, Some(ROOT_TOKEN), "/projects/remote-import", &form);
        assert_eq!(response.status(), 400, "{url}");
        assert_eq!(
            response.json::<Value>().unwrap(),
            serde_json::json!({ "message": message })
        );
    }

    let server = Server::start_with(&["--allow-local-requests", "--max-upload-bytes", "1048576"]);
    let archive = "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: 1000";
    let html = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000";
    let empty = "HTTP/1.1 200 OK\r\nContent-Type: application/gzip\r\nContent-Length: 0";
    let huge = "HTTP/1.1 200 OK\r\nContent-Type: application/x-gzip\r\nContent-Length: 2097152";
    let missing = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9";
    let s3 = "HTTP/1.1 403 Forbidden\r\nServer: AmazonS3\r\nx-amz-request-id: 4442587FB7D0A2F9\r\nContent-Type: application/xml\r\nContent-Length: 0";
    let refused = [
        (html, "Content type 'text/html' not allowed. (Allowed: application/gzip, application/x-tar, application/x-gzip)"),
        (empty, "Content length is too small (should be at least 1 Byte)"),
        (huge, "Content length is too big (should be at most 1 MB)"),
        (missing, "Failed to retrive headers: 404 Not Found"),
    ];
    for (head, message) in refused {
        let url = format!("{}/export.tar.gz", answering(head));
        let form = [("url", url.as_str()), ("path", "checked")];
        let response = post_form(&server, Some(ROOT_TOKEN), "/projects/remote-import", &form);
        assert_eq!(response.status(), 400, "{head}");
        assert_eq!(
            response.json::<Value>().unwrap(),
            serde_json::json!({ "message": message })
        );
    }
    let unreachable = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/x.tar.gz", listener.local_addr().unwrap())
    };
    let form = [("url", unreachable.as_str()), ("path", "checked")];
    let response = post_form(&server, Some(ROOT_TOKEN), "/projects/remote-import", &form);
    assert_eq!(response.status(), 400);
    let message = response.json::<Value>().unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("Failed to retrive headers: "),
        "{message}"
    );
    // Nothing was created: the path is free.
    for server in [&strict, &server] {
        let status = server
            .get(Some(ROOT_TOKEN), "/projects/root%2Fchecked")
            .status();
        assert_eq!(status, 404);
    }

    // An archive's answer, and S3's (a presigned GET URL refuses a HEAD),
    // pass; the fetch itself comes later.
    for head in [archive, s3] {
        let url = format!("{}/export.tar.gz", answering(head));
        let path = if head == s3 { "from-s3" } else { "from-https" };
        let form = [("url", url.as_str()), ("path", path)];
        let response = post_form(&server, Some(ROOT_TOKEN), "/projects/remote-import", &form);
        assert_eq!(response.status(), 201, "{head}");
    }
}

/// `override_params` (lib/api/project_import.rb: `optional :override_params,
/// type: Hash do use :optional_project_params end`) sent as JSON, as
/// python-gitlab sends them: the imported project and its exports carry
/// them, every other attribute as the archive had it; a value Grape cannot
/// coerce is its `400`, before any project exists.
#[test]
fn override_params_apply_to_a_remote_import_and_its_exports() {
    let server = Server::start_with(&["--download-redirect", "--allow-local-requests"]);
    let (_, url) = exported_fixture(&server);
    let response = client()
        .post(server.url("/projects/remote-import"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&serde_json::json!({
            "url": url,
            "path": "overridden",
            "override_params": {"description": "From JSON", "visibility": "internal", "no_such": "x"}
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().unwrap()["id"].as_u64().unwrap();
    let status = server.wait_import(ROOT_TOKEN, id);
    assert_eq!(status["import_status"], "finished", "{status}");
    let project: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{id}"))
        .json()
        .unwrap();
    assert_eq!(project["description"], "From JSON");
    let attributes = read_archive(&server.export_and_download(ROOT_TOKEN, id).1).attributes;
    let original: serde_json::Map<String, Value> = serde_json::from_slice(
        &std::fs::read(e2e::fixtures_dir().join("complex/tree/project.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(attributes["description"], "From JSON");
    assert_eq!(attributes["visibility_level"], 10);
    assert!(attributes.get("no_such").is_none());
    for (key, value) in &original {
        if key != "description" && key != "visibility_level" {
            assert_eq!(attributes.get(key), Some(value), "{key}");
        }
    }

    let response = client()
        .post(server.url("/projects/remote-import"))
        .header("PRIVATE-TOKEN", ROOT_TOKEN)
        .json(&serde_json::json!({
            "url": url, "path": "refused", "override_params": {"visibility": "secret"}
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().unwrap(),
        serde_json::json!({"error": "override_params[visibility] does not have a valid value"})
    );
    let status = server
        .get(Some(ROOT_TOKEN), "/projects/root%2Frefused")
        .status();
    assert_eq!(status, 404);
}
