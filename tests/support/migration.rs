//! Migration by direct transfer from the tests' side: starting one and
//! waiting for it, and a stand-in for a GitLab source instance that can be
//! made to fail, or to attack, in the ways a real one (or a hostile one
//! a user names) can.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::{client, fixtures_dir, Server, ROOT_TOKEN};

/// Waits for the migration to be done; returns it.
pub fn wait_migration(server: &Server, token: &str, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let migration: Value = server
            .get(Some(token), &format!("/bulk_imports/{id}"))
            .json()
            .unwrap();
        let status = migration["status"].as_str().unwrap().to_owned();
        if !["created", "started"].contains(&status.as_str()) {
            return migration;
        }
        assert!(Instant::now() < deadline, "still {status}: {migration}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn start_migration(server: &Server, token: &str, body: &Value) -> reqwest::blocking::Response {
    client()
        .post(server.url("/bulk_imports"))
        .header("PRIVATE-TOKEN", token)
        .json(body)
        .send()
        .unwrap()
}

pub fn migration_of(source_url: &str, source_token: &str, path: &str, slug: &str) -> Value {
    json!({
        "configuration": {"url": source_url, "access_token": source_token},
        "entities": [{
            "source_type": "project_entity",
            "source_full_path": path,
            "destination_slug": slug,
            "destination_namespace": "root",
        }],
    })
}

/// Starts the migration and waits for it; returns it and its one entity.
pub fn migrate(server: &Server, body: &Value) -> (Value, Value) {
    let created = start_migration(server, ROOT_TOKEN, body);
    assert_eq!(created.status(), 201);
    let created: Value = created.json().unwrap();
    assert_eq!(created["status"], "created");
    assert_eq!(created["source_type"], "gitlab");
    let id = created["id"].as_u64().unwrap();
    let migration = wait_migration(server, ROOT_TOKEN, id);
    let entities: Vec<Value> = server
        .get(Some(ROOT_TOKEN), &format!("/bulk_imports/{id}/entities"))
        .json()
        .unwrap();
    assert_eq!(entities.len(), 1);
    (migration, entities[0].clone())
}

/// The destination runs with local requests allowed: its source is here.
pub fn destination() -> Server {
    Server::start_with(&["--allow-local-requests"])
}

/// A stand-in for a GitLab source instance, with the faults a real one has.
#[derive(Default)]
pub struct FakeSource {
    pub token: String,
    /// Requests answered `503` before the source recovers.
    pub unavailable_for: usize,
    /// A relation whose export failed on the source.
    pub failing_relation: Option<String>,
    /// The export never finishes.
    pub never_finishes: bool,
    /// The export is in progress (`0`) for this many status requests.
    pub exporting_for_polls: usize,
    /// The members API lists this many made-up members (`member-<n>`,
    /// Developers), in pages, instead of the fixture's.
    pub member_count: Option<usize>,
    pub status_polls: AtomicUsize,
    /// The source goes away at its first download.
    pub vanishes: bool,
    /// `GET /user` is refused (`401`) with a body of this many bytes.
    pub huge_refusal: Option<u64>,
    /// The relations export status answers a JSON text of this many bytes.
    pub huge_status: Option<u64>,
    /// The project lookup answers `200`, then a byte a second, forever.
    pub trickles: bool,
    /// The project lookup is refused (`403`) with the request's
    /// `Authorization` header in its body.
    pub echoes_token: bool,
    /// A failed relation's error holds the token.
    pub echoes_token_in_status: bool,
    /// `issues` is exported in this many batches (each the fixture's
    /// issues again).
    pub issue_batches: Option<u32>,
    /// `uploads.tar.gz` starts with a GNU long name claiming this many
    /// bytes (and holding 64 KiB).
    pub uploads_long_name: Option<u64>,
    /// A `Range: bytes=N-` on a download is answered `206` with the file
    /// from byte N (GitLab's Workhorse and S3 do); else the whole file.
    pub honours_ranges: bool,
    /// Each download asked for: the relation, and the byte its range
    /// started at, if it had one.
    pub downloaded: std::sync::Mutex<Vec<(String, Option<u64>)>>,
    /// From the second download of `repository` on, the source serves this
    /// file in its place (it exported the project again meanwhile).
    pub repository_exported_again: Option<Vec<u8>>,
    pub requests: AtomicUsize,
    pub downloads: AtomicUsize,
    pub gone: AtomicBool,
    /// GitLab's relation files: `self.json.gz`, `<relation>.ndjson.gz`,
    /// `uploads.tar.gz` (paths relative to the uploads folder).
    pub files: BTreeMap<String, Vec<u8>>,
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

impl FakeSource {
    pub fn of_fixture(token: &str) -> FakeSource {
        let root = fixtures_dir().join("complex/tree");
        let mut files = BTreeMap::new();
        files.insert(
            "self".to_owned(),
            gzip(&std::fs::read(root.join("project.json")).unwrap()),
        );
        for entry in std::fs::read_dir(root.join("project")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            if name != "project_members" {
                files.insert(name, gzip(&std::fs::read(&path).unwrap()));
            }
        }
        let mut uploads = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        uploads
            .append_data(&mut header, "0123abcd/image.png", &b"image"[..])
            .unwrap();
        files.insert("uploads".into(), gzip(&uploads.into_inner().unwrap()));
        FakeSource {
            token: token.to_owned(),
            files,
            ..FakeSource::default()
        }
    }

    /// Serves it on a thread of its own; returns its base URL.
    pub fn serve(self) -> (String, Arc<FakeSource>) {
        let state = Arc::new(self);
        let app = Router::new()
            .route("/api/v4/user", get(fake_user))
            .route("/api/v4/projects/{path}", get(fake_project))
            .route("/api/v4/projects/{id}/members/all", get(fake_members))
            .route("/api/v4/projects/{id}/wikis", get(fake_wikis))
            .route("/api/v4/projects/{id}/snippets", get(fake_snippets))
            .route("/api/v4/projects/{id}/export_relations", post(fake_start))
            .route(
                "/api/v4/projects/{id}/export_relations/status",
                get(fake_status),
            )
            .route(
                "/api/v4/projects/{id}/export_relations/download",
                get(fake_download),
            )
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                fake_faults,
            ))
            .with_state(state.clone());
        let (sender, receiver) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                sender.send(listener.local_addr().unwrap()).unwrap();
                let gone = async move {
                    while !shared.gone.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(gone)
                    .await
                    .unwrap();
            });
        });
        let address = receiver.recv().unwrap();
        (format!("http://{address}"), state)
    }

    fn status(&self) -> Vec<Value> {
        let exporting = self.status_polls.fetch_add(1, Ordering::SeqCst) < self.exporting_for_polls;
        self.files
            .keys()
            .map(|relation| {
                if relation == "issues" {
                    if let Some(batches) = self.issue_batches {
                        return json!({
                            "relation": relation,
                            "status": 1,
                            "error": null,
                            "updated_at": "2026-12-01T00:00:00.000Z",
                            "batched": true,
                            "batches_count": batches,
                            "total_objects_count": batches,
                        });
                    }
                }
                let failed = self.failing_relation.as_deref() == Some(relation);
                let status = match (self.never_finishes || exporting, failed) {
                    (true, _) => 0,
                    (_, true) => -1,
                    _ => 1,
                };
                json!({
                    "relation": relation,
                    "status": status,
                    "error": match (failed, self.echoes_token_in_status) {
                        (false, _) => json!(null),
                        (true, false) => json!("boom"),
                        (true, true) => json!(format!("boom: Bearer {}", self.token)),
                    },
                    "updated_at": "2026-12-01T00:00:00.000Z",
                    "batched": false,
                    "batches_count": 0,
                    "total_objects_count": 1,
                })
            })
            .collect()
    }
}

async fn fake_faults(
    State(source): State<Arc<FakeSource>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let seen = source.requests.fetch_add(1, Ordering::SeqCst);
    if seen < source.unavailable_for {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", source.token));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "401 Unauthorized"})),
        )
            .into_response();
    }
    next.run(request).await
}

/// A body of `size` bytes of `fill`, made as it is sent.
fn endless(size: u64, fill: u8) -> Body {
    const CHUNK: u64 = 64 * 1024;
    let chunks = size.div_ceil(CHUNK);
    let body = futures::stream::iter(0..chunks).map(move |n| {
        let len = CHUNK.min(size - n * CHUNK) as usize;
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![fill; len]))
    });
    Body::from_stream(body)
}

async fn fake_user(State(source): State<Arc<FakeSource>>) -> Response {
    if let Some(size) = source.huge_refusal {
        return (StatusCode::UNAUTHORIZED, endless(size, b'x')).into_response();
    }
    Json(json!({"id": 1, "username": "source-user"})).into_response()
}

async fn fake_project(
    State(source): State<Arc<FakeSource>>,
    axum::extract::Path(path): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    if source.echoes_token {
        let echoed = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        // Within the 200 characters of it a failure keeps.
        let body = format!("{}Authorization: {echoed}", "x".repeat(150));
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    if source.trickles {
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")), ()))
        });
        return Body::from_stream(trickle).into_response();
    }
    if path == "group/project" {
        Json(json!({"id": 7, "path_with_namespace": path})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "404 Project Not Found"})),
        )
            .into_response()
    }
}

/// GitLab's wikis API: a wiki of one page (which GitLab serves over git).
async fn fake_wikis() -> Response {
    Json(json!([{"format": "markdown", "slug": "home", "title": "home", "encoding": "UTF-8"}]))
        .into_response()
}

/// GitLab's snippets API: one snippet (its repository is git only).
async fn fake_snippets() -> Response {
    Json(json!([{"id": 1, "title": "a snippet", "file_name": "a.rb"}])).into_response()
}

/// GitLab's members API: the fixture's members, one page, or
/// `member_count` made-up ones in pages.
async fn fake_members(
    State(source): State<Arc<FakeSource>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if let Some(count) = source.member_count {
        let number = |name: &str, default: usize| {
            query
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (page, per_page) = (
            number("page", 1).max(1),
            number("per_page", 20).clamp(1, 100),
        );
        let first = (page - 1) * per_page;
        let members: Vec<Value> = (first..count.min(first + per_page))
            .map(|n| json!({"id": 1000 + n, "username": format!("member-{n}"), "access_level": 30}))
            .collect();
        let next = if first + per_page < count {
            (page + 1).to_string()
        } else {
            String::new()
        };
        return ([("x-next-page", next)], Json(Value::Array(members))).into_response();
    }
    let records =
        std::fs::read_to_string(fixtures_dir().join("complex/tree/project/project_members.ndjson"))
            .unwrap();
    let members: Vec<Value> = records
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            let user = &record["user"];
            json!({
                "id": user["id"], "username": user["username"], "name": user["username"],
                "state": "active", "locked": false, "avatar_url": null,
                "web_url": format!("https://gitlab.example.com/{}", user["username"].as_str().unwrap()),
                "created_at": record["created_at"], "expires_at": null,
                "access_level": record["access_level"], "group_saml_identity": null,
                "membership_state": "active",
            })
        })
        .collect();
    ([("x-next-page", "")], Json(Value::Array(members))).into_response()
}

async fn fake_start() -> StatusCode {
    StatusCode::ACCEPTED
}

async fn fake_status(State(source): State<Arc<FakeSource>>) -> Response {
    if let Some(size) = source.huge_status {
        // `[` and then whitespace: valid JSON's start, never its end.
        return endless(size, b' ').into_response();
    }
    Json(Value::Array(source.status())).into_response()
}

async fn fake_download(
    State(source): State<Arc<FakeSource>>,
    Query(query): Query<BTreeMap<String, String>>,
    request_headers: HeaderMap,
) -> Response {
    source.downloads.fetch_add(1, Ordering::SeqCst);
    let range_start = request_headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("bytes=")?
                .strip_suffix('-')?
                .parse::<u64>()
                .ok()
        });
    source.downloaded.lock().unwrap().push((
        query.get("relation").cloned().unwrap_or_default(),
        range_start,
    ));
    if source.vanishes {
        source.gone.store(true, Ordering::SeqCst);
        return (StatusCode::BAD_GATEWAY, "gone").into_response();
    }
    let relation = query.get("relation").cloned().unwrap_or_default();
    if let (Some(claimed), "uploads") = (source.uploads_long_name, relation.as_str()) {
        return crate::hostile::long_name_tar_gz(claimed).into_response();
    }
    let repository_downloads = source
        .downloaded
        .lock()
        .unwrap()
        .iter()
        .filter(|(relation, _)| relation == "repository")
        .count();
    let file = match &source.repository_exported_again {
        Some(again) if relation == "repository" && repository_downloads > 1 => Some(again),
        _ => source.files.get(&relation),
    };
    match file {
        Some(file) => {
            let mut headers = HeaderMap::new();
            headers.insert("content-type", "application/gzip".parse().unwrap());
            match range_start {
                Some(start) if source.honours_ranges && (start as usize) < file.len() => {
                    let range = format!("bytes {start}-{}/{}", file.len() - 1, file.len());
                    headers.insert("content-range", range.parse().unwrap());
                    let rest = file[start as usize..].to_vec();
                    (StatusCode::PARTIAL_CONTENT, headers, rest).into_response()
                }
                _ => (headers, file.clone()).into_response(),
            }
        }
        None => (StatusCode::NOT_FOUND, "no such relation").into_response(),
    }
}
