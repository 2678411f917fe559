//! Test support: start the real `local` binary on a free port with its own
//! data directory, talk to it over HTTP, build and read archives.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::blocking::{multipart, Client, Response};
use serde_json::Value;

pub const ROOT_TOKEN: &str = "root-token-for-tests";

/// Logs of the code under test, kept with the test's output (shown when it
/// fails), when `E2E_LOG` names a filter such as `info`.
pub fn log_when_asked() {
    if let Ok(filter) = std::env::var("E2E_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project venv's Python, which the test command fills.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash infra/test.sh` (it installs the Python tools into .venv), \
         or `python3 -m venv .venv && .venv/bin/pip install -r infra/requirements.txt`",
        python.display()
    );
    python
}

/// GitLab's reference exports, carried by the repository
/// (`tests/fixtures/gitlab`, see its README); `GITLAB_FIXTURES` points
/// elsewhere.
pub fn fixtures_dir() -> PathBuf {
    let dir = match std::env::var("GITLAB_FIXTURES") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gitlab"),
    };
    assert!(
        dir.is_dir(),
        "GitLab fixtures not found at {} (GITLAB_FIXTURES, or tests/fixtures/gitlab)",
        dir.display()
    );
    dir
}

/// The `local` binary next to this test's own target directory. The test
/// command builds it (`cargo build --workspace --all-targets`) before the
/// tests run; a missing or stale binary fails loudly with what to run.
pub fn local_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> → target/<profile>/local
        let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
        let binary = profile_dir.join("local");
        let rebuild = "run `cargo build --workspace --all-targets` (or the README's test command, bash infra/test.sh)";
        let built = std::fs::metadata(&binary)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", binary.display()));
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let newest = ["shared/src", "infra/local/src", "Cargo.lock"]
            .iter()
            .map(|p| newest_modification(&root.join(p)))
            .max()
            .expect("sources");
        assert!(built >= newest, "{} is older than its sources: {rebuild}", binary.display());
        binary
    })
}

fn newest_modification(path: &Path) -> std::time::SystemTime {
    let meta = std::fs::metadata(path).expect("source path");
    if !meta.is_dir() {
        return meta.modified().expect("mtime");
    }
    std::fs::read_dir(path)
        .expect("source dir")
        .map(|entry| newest_modification(&entry.expect("entry").path()))
        .max()
        .unwrap_or(std::time::UNIX_EPOCH)
}

pub struct Server {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    /// A fresh server with its own data directory and two workers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A fresh server with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(temp.path(), extra);
        server._temp = Some(temp);
        server
    }

    /// A server on an existing data directory, with extra `serve` flags.
    /// Tests export often: the export rate limit is off unless a test sets it.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_in_env(data_dir, extra, &[])
    }

    /// `start_in` with extra environment variables (a `CRASH_AT` point).
    pub fn start_in_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut args = extra.to_vec();
        if !extra.contains(&"--export-rate-limit") {
            args.extend(["--export-rate-limit", "0"]);
        }
        if !extra.contains(&"--download-rate-limit") {
            args.extend(["--download-rate-limit", "0"]);
        }
        let mut child = Command::new(local_binary())
            .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(&args)
            .env("LOCAL_ROOT_TOKEN", ROOT_TOKEN)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("local server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.expect("server output");
            if let Some(rest) = line.strip_prefix("GitLab export/import API listening on ") {
                base = Some(rest.trim_end_matches("/api/v4").to_owned());
            }
            if line == "ready" {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            base: base.expect("the server printed its URL"),
            data_dir: data_dir.to_owned(),
            _temp: None,
        }
    }

    /// Waits for the process to end by itself (a crash point).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("server process")
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server and starts a new one on the same data directory.
    pub fn restart(mut self, extra: &[&str]) -> Self {
        self.kill();
        let temp = self._temp.take();
        let mut next = Server::start_in(&self.data_dir, extra);
        next._temp = temp;
        next
    }

    /// The server's peak resident memory so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kib * 1024
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v4{}", self.base, path)
    }

    pub fn get(&self, token: Option<&str>, path: &str) -> Response {
        with_token(client().get(self.url(path)), token)
            .send()
            .expect("request")
    }

    pub fn post(&self, token: Option<&str>, path: &str) -> Response {
        with_token(client().post(self.url(path)), token)
            .send()
            .expect("request")
    }

    /// Creates a user through the admin API and returns (id, token).
    pub fn create_user(&self, username: &str) -> (u64, String) {
        let user: Value = client()
            .post(self.url("/users"))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .json(&serde_json::json!({ "username": username, "name": username }))
            .send()
            .expect("create user")
            .json()
            .expect("user JSON");
        let id = user["id"].as_u64().expect("user id");
        let token: Value = client()
            .post(self.url(&format!("/users/{id}/personal_access_tokens")))
            .header("PRIVATE-TOKEN", ROOT_TOKEN)
            .json(&serde_json::json!({ "name": "tests", "scopes": ["api"] }))
            .send()
            .expect("create token")
            .json()
            .expect("token JSON");
        (id, token["token"].as_str().expect("token").to_owned())
    }

    /// `POST /projects/import` with extra form fields; returns the response.
    pub fn import(&self, token: &str, archive: Vec<u8>, fields: &[(&str, &str)]) -> Response {
        self.try_import(token, archive, fields)
            .expect("import request")
    }

    /// `POST /projects/import`, which may meet a server that died.
    pub fn try_import(
        &self,
        token: &str,
        archive: Vec<u8>,
        fields: &[(&str, &str)],
    ) -> reqwest::Result<Response> {
        let mut form = multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        form = form.part(
            "file",
            multipart::Part::bytes(archive).file_name("export.tar.gz"),
        );
        client()
            .post(self.url("/projects/import"))
            .header("PRIVATE-TOKEN", token)
            .multipart(form)
            .send()
    }

    /// `POST /projects/import-relation`; returns the response.
    pub fn import_relation(
        &self,
        token: &str,
        path: &str,
        relation: &str,
        archive: Vec<u8>,
    ) -> Response {
        let form = multipart::Form::new()
            .text("path", path.to_owned())
            .text("relation", relation.to_owned())
            .part(
                "file",
                multipart::Part::bytes(archive).file_name("export.tar.gz"),
            );
        client()
            .post(self.url("/projects/import-relation"))
            .header("PRIVATE-TOKEN", token)
            .multipart(form)
            .send()
            .expect("relation import request")
    }

    /// Waits until the relation import with GitLab id `number` ends;
    /// returns its entry of `GET /projects/:id/relation-imports`.
    pub fn wait_relation_import(&self, token: &str, id: u64, number: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let list: Value = self
                .get(Some(token), &format!("/projects/{id}/relation-imports"))
                .json()
                .expect("relation imports JSON");
            let entry = list
                .as_array()
                .expect("an array")
                .iter()
                .find(|e| e["id"] == number)
                .cloned()
                .unwrap_or(Value::Null);
            if matches!(entry["status"].as_str(), Some("finished" | "failed")) {
                return entry;
            }
            assert!(Instant::now() < deadline, "timed out: {list}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Imports and waits for the end; returns the final import status.
    pub fn import_and_wait(&self, token: &str, archive: Vec<u8>, fields: &[(&str, &str)]) -> Value {
        let response = self.import(token, archive, fields);
        assert_eq!(response.status(), 201, "{:?}", response.text());
        let project: Value = response.json().expect("project JSON");
        self.wait_import(token, project["id"].as_u64().expect("id"))
    }

    pub fn wait_import(&self, token: &str, id: u64) -> Value {
        self.wait_for(
            token,
            &format!("/projects/{id}/import"),
            "import_status",
            &["finished", "failed"],
        )
    }

    pub fn wait_export(&self, token: &str, id: u64) -> Value {
        self.wait_for(
            token,
            &format!("/projects/{id}/export"),
            "export_status",
            &["finished", "failed"],
        )
    }

    fn wait_for(&self, token: &str, path: &str, field: &str, done: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status: Value = self.get(Some(token), path).json().expect("status JSON");
            if done.contains(&status[field].as_str().unwrap_or_default()) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}: {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Schedules an export, waits for it and downloads the archive through
    /// the 302 and the signed URL. Returns (file name, archive bytes).
    pub fn export_and_download(&self, token: &str, id: u64) -> (String, Vec<u8>) {
        let response = self.post(Some(token), &format!("/projects/{id}/export"));
        assert_eq!(response.status(), 202);
        let status = self.wait_export(token, id);
        assert_eq!(status["export_status"], "finished", "{status}");
        self.download(token, id)
    }

    /// `GET .../export/download`, following a `302` to the signed URL when
    /// the server redirects. Returns (file name, archive bytes).
    pub fn download(&self, token: &str, id: u64) -> (String, Vec<u8>) {
        let (status, disposition, bytes) =
            self.fetch_file(token, &format!("/projects/{id}/export/download"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        let name = disposition
            .split("filename=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("file name")
            .to_owned();
        (name, bytes)
    }

    /// A download route: the file it streams, or the file behind its `302`.
    /// Returns the final status, the Content-Disposition and the body.
    pub fn fetch_file(&self, token: &str, path: &str) -> (u16, String, Vec<u8>) {
        let mut response = self.get(Some(token), path);
        if response.status() == 302 {
            let location = response.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
            response = client().get(&location).send().expect("signed download");
        }
        let status = response.status().as_u16();
        let disposition = response
            .headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            status,
            disposition,
            response.bytes().expect("body").to_vec(),
        )
    }
}

impl Server {
    /// Waits until no relation of the relations export is still running.
    pub fn wait_relations_export(&self, token: &str, id: u64) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let status: Value = self
                .get(
                    Some(token),
                    &format!("/projects/{id}/export_relations/status"),
                )
                .json()
                .expect("status JSON");
            let entries = status.as_array().expect("an array").clone();
            if !entries.is_empty() && entries.iter().all(|e| e["status"] != 0) {
                return entries;
            }
            assert!(Instant::now() < deadline, "timed out: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET .../export_relations/download` with a query; follows a 302.
    /// Returns the status of the route (or of the file) and the file.
    pub fn download_relation(&self, token: &str, id: u64, query: &str) -> (u16, String, Vec<u8>) {
        self.fetch_file(
            token,
            &format!("/projects/{id}/export_relations/download?{query}"),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A client that does not follow redirects, so tests see the 302.
pub fn client() -> Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client")
        })
        .clone()
}

/// A client whose connections come from `address` (another loopback
/// address than the tests' usual 127.0.0.1: another client, to the server).
pub fn client_from(address: &str) -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(address.parse::<std::net::IpAddr>().expect("an address"))
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

fn with_token(
    request: reqwest::blocking::RequestBuilder,
    token: Option<&str>,
) -> reqwest::blocking::RequestBuilder {
    match token {
        Some(token) => request.header("PRIVATE-TOKEN", token),
        None => request,
    }
}

/// A `.tar.gz` of `(path, bytes)` entries, in order. Paths are written as
/// given, even hostile ones (`..`, absolute) that `tar` would refuse to set.
pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let name = &mut header.as_old_mut().name;
        assert!(path.len() < name.len(), "test paths fit the tar header");
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *bytes).expect("tar entry");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

/// An importable archive of a fixture folder: VERSION plus every file in it.
pub fn fixture_archive(name: &str) -> Vec<u8> {
    fixture_archive_edited(name, |_, bytes| bytes)
}

/// A fixture archive with files changed on the way: `edit(path, bytes)`.
pub fn fixture_archive_edited(name: &str, edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let root = fixtures_dir().join(name);
    let mut files = Vec::new();
    collect_files(&root, &root, &mut files);
    files.sort();
    let mut entries: Vec<(String, Vec<u8>)> = vec![("VERSION".into(), b"0.2.4".to_vec())];
    for path in files {
        let bytes = std::fs::read(root.join(&path)).expect("fixture file");
        let bytes = edit(&path, bytes);
        entries.push((path, bytes));
    }
    let borrowed: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    tar_gz(&borrowed)
}

/// A fixture archive with every other record of `relations` left out.
pub fn fixture_without_half(name: &str, relations: &[&str]) -> Vec<u8> {
    fixture_archive_edited(name, |path, bytes| {
        let halved = relations
            .iter()
            .any(|r| path == format!("tree/project/{r}.ndjson"));
        if !halved {
            return bytes;
        }
        let text = String::from_utf8(bytes).expect("UTF-8 NDJSON");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .step_by(2)
            .collect();
        format!("{}\n", kept.join("\n")).into_bytes()
    })
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            out.push(
                path.strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

/// What an archive holds: project attributes, records per relation, other files.
#[derive(Debug, Default, PartialEq)]
pub struct ArchiveContent {
    pub attributes: serde_json::Map<String, Value>,
    pub relations: BTreeMap<String, Vec<Value>>,
    pub files: BTreeMap<String, Vec<u8>>,
}

pub fn read_archive(bytes: &[u8]) -> ArchiveContent {
    let mut content = ArchiveContent::default();
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(bytes));
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("entry data");
        if path == "tree/project.json" {
            content.attributes = serde_json::from_slice(&data).expect("project.json");
        } else if let Some(relation) = path
            .strip_prefix("tree/project/")
            .and_then(|p| p.strip_suffix(".ndjson"))
        {
            content.relations.insert(relation.to_owned(), ndjson(&data));
        } else {
            content.files.insert(path, data);
        }
    }
    content
}

/// One entry of a `.tar.gz`, byte for byte.
pub fn archive_entry(bytes: &[u8], wanted: &str) -> Option<Vec<u8>> {
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(bytes));
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == wanted {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("entry data");
            return Some(data);
        }
    }
    None
}

pub fn ndjson(data: &[u8]) -> Vec<Value> {
    data.split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| serde_json::from_slice(line).expect("NDJSON record"))
        .collect()
}

/// The records of a fixture folder as GitLab wrote them, per relation.
pub fn fixture_relations(name: &str) -> BTreeMap<String, Vec<Value>> {
    let root = fixtures_dir().join(name);
    let mut relations = BTreeMap::new();
    let tree = root.join("tree/project");
    if tree.is_dir() {
        for entry in std::fs::read_dir(&tree).expect("tree") {
            let path = entry.expect("entry").path();
            let relation = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            let records = ndjson(&std::fs::read(&path).expect("relation file"));
            if !records.is_empty() {
                relations.insert(relation, records);
            }
        }
    }
    relations
}

pub mod contract;
pub mod hostile;
pub mod intercepted;
pub mod migration;
pub mod moto;
pub mod stores;

/// Issues enough that an import cut short (`stores::cut_short`) stops
/// before the archive's end: a run asked to stop first stores what its
/// reader read ahead, a few thousand records.
pub const ISSUES_PAST_ONE_RUN: usize = 12_000;

/// A deterministic GitLab-shaped project archive with `issues` issues (a
/// few notes and label links each), some labels and merge requests.
pub fn synthetic_archive(issues: usize) -> Vec<u8> {
    synthetic_archive_with_bundle(issues, b"not really a git bundle")
}

/// `synthetic_archive` with `bundle` as its repository.
pub fn synthetic_archive_with_bundle(issues: usize, bundle: &[u8]) -> Vec<u8> {
    let mut issue_lines = String::new();
    for i in 1..=issues {
        let notes: Vec<String> = (0..i % 4)
            .map(|n| format!(r#"{{"note":"Note {n} on issue {i}","author_id":{},"created_at":"2026-01-01T00:00:00.000Z"}}"#, n + 1))
            .collect();
        issue_lines.push_str(&format!(
            r#"{{"iid":{i},"title":"Issue {i}","description":"{}","state":"opened","notes":[{}],"label_links":[{{"label":{{"title":"bug"}}}}]}}"#,
            "Steps to reproduce. ".repeat(1 + i % 5),
            notes.join(",")
        ));
        issue_lines.push('\n');
    }
    let labels = "{\"title\":\"bug\",\"color\":\"#d9534f\"}\n{\"title\":\"feature\",\"color\":\"#428bca\"}\n";
    let merge_requests: String = (1..=issues.div_ceil(10))
        .map(|i| format!("{{\"iid\":{i},\"title\":\"MR {i}\",\"source_branch\":\"b{i}\",\"target_branch\":\"main\"}}\n"))
        .collect();
    tar_gz(&[
        ("VERSION", b"0.2.4"),
        (
            "tree/project.json",
            br#"{"description":"synthetic","visibility_level":0}"#,
        ),
        ("tree/project/labels.ndjson", labels.as_bytes()),
        ("tree/project/issues.ndjson", issue_lines.as_bytes()),
        (
            "tree/project/merge_requests.ndjson",
            merge_requests.as_bytes(),
        ),
        ("project.bundle", bundle),
        ("uploads/abc123/screenshot.png", b"\x89PNG fake"),
    ])
}

/// Random bytes: an upload gzip cannot shrink.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 56) as u8
        })
        .collect()
}

/// The text of an error answer, whichever of GitLab's two shapes it has:
/// Grape's `{"error": …}` (parameter validation, unknown routes) or
/// `render_api_error!`'s `{"message": …}`.
pub fn error_text(body: &Value) -> &str {
    body["error"]
        .as_str()
        .or(body["message"].as_str())
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// `gzip -t`, `tar -tzf` and Python's tarfile in stream mode (which reads
/// only a first gzip member) read the whole archive, whose issues file has
/// `issues` lines.
pub fn standard_tools_read(archive: &[u8], issues: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("export.tar.gz");
    std::fs::write(&path, archive).expect("archive written");
    let file = path.to_str().expect("a UTF-8 path");
    let run = |program: &str, args: &[&str]| {
        let output = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|err| panic!("{program}: {err}"));
        assert!(output.status.success(), "{program} {args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("UTF-8 output")
    };
    run("gzip", &["-t", file]);
    let listed = run("tar", &["-tzf", file]);
    assert!(
        listed.lines().any(|l| l == "tree/project/issues.ndjson"),
        "{listed}"
    );
    let script = "import sys, tarfile\n\
        with tarfile.open(sys.argv[1], 'r|gz') as tar:\n\
        \x20   for member in tar:\n\
        \x20       if member.name == 'tree/project/issues.ndjson':\n\
        \x20           print(sum(1 for _ in tar.extractfile(member)))\n";
    let counted = run("python3", &["-c", script, file]);
    assert_eq!(counted.trim(), issues.to_string());
}
