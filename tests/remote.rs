//! Archives over HTTP on the local server: remote imports from a URL, the
//! presigned upload flow (`import/authorize`), and exports sent to a URL.

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

    // A URL that answers 404: the import fails and says so.
    let missing = url.replace("export.tar.gz", "missing.tar.gz");
    let response = post_form(
        &server,
        Some(ROOT_TOKEN),
        "/projects/remote-import",
        &[("url", &missing), ("path", "missing")],
    );
    let id = response.json::<Value>().unwrap()["id"].as_u64().unwrap();
    let status = server.wait_import(ROOT_TOKEN, id);
    assert_eq!(status["import_status"], "failed");
    let error = status["import_error"].as_str().unwrap();
    assert!(
        error.starts_with("downloading the archive failed: 403"),
        "{error}"
    );

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
        "/projects/import/authorize",
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
        "/projects/import/authorize",
        &[("path", "x")],
    );
    assert_eq!(response.status(), 401);
    let response = post_form(&server, Some(ROOT_TOKEN), "/projects/import/authorize", &[]);
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
        "/projects/import/authorize",
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
            assert_eq!(
                body["message"],
                format!("{parameter} is blocked: {reason}"),
                "{url}"
            );
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
