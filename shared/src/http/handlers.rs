//! Thin handlers: parse the request, call a service, render the answer.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use super::extract::{BaseUrl, Caller, CallerProject, CallerToken, Params};
use super::views;
use crate::domain::UploadTarget;
use crate::domain::{new_id, now};
use crate::service::{self, relation_export, schedule, ImportRequest};
use crate::signing::Action;
use crate::{auth, remote, App, Error, Result};

type JsonResponse = Result<(StatusCode, Json<Value>)>;

/// Grape's answer for a path no route has (GitLab's `lib/api/api.rb`).
pub async fn not_found() -> Error {
    Error::NoRoute(404, "404 Not Found")
}

pub async fn openapi() -> Response {
    (
        [(CONTENT_TYPE, "application/yaml; charset=utf-8")],
        super::OPENAPI_YAML,
    )
        .into_response()
}

/// Grape's answer for a known path with another method.
pub async fn method_not_allowed() -> Error {
    Error::NoRoute(405, "405 Not Allowed")
}

fn accepted() -> JsonResponse {
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "message": "202 Accepted" })),
    ))
}

pub async fn schedule_export(
    State(app): State<App>,
    CallerProject { user, project }: CallerProject,
    params: Params,
) -> JsonResponse {
    let description = params.get("description").map(str::to_owned);
    let upload = upload_target(&params, app.settings.allow_local_requests)?;
    service::schedule_export(&app, &user, &project, description, upload).await?;
    accepted()
}

/// GitLab's `upload[url]`, `upload[http_method]` and (ours)
/// `upload[headers][Name]`.
fn upload_target(params: &Params, allow_local: bool) -> Result<Option<UploadTarget>> {
    let Some(url) = params.get("upload[url]").filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    remote::check_url(url, "upload[url]", allow_local)?;
    let method = params
        .get("upload[http_method]")
        .filter(|m| !m.is_empty())
        .unwrap_or("PUT")
        .to_ascii_uppercase();
    if method != "PUT" && method != "POST" {
        return Err(Error::InvalidParameter(
            "upload[http_method] does not have a valid value".into(),
        ));
    }
    let headers = params
        .0
        .iter()
        .filter_map(|(name, value)| {
            let header = name.strip_prefix("upload[headers][")?.strip_suffix(']')?;
            Some((header.to_owned(), value.clone()))
        })
        .collect();
    Ok(Some(UploadTarget {
        url: url.to_owned(),
        method,
        headers,
    }))
}

pub async fn export_status(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    BaseUrl(base): BaseUrl,
) -> JsonResponse {
    let state = service::export_state(&app, &project).await?;
    Ok((
        StatusCode::OK,
        Json(views::export_status(&project, &state, &base)),
    ))
}

/// `DELETE /projects/:id`: gone at once, its content deleted behind.
pub async fn delete_project(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
) -> JsonResponse {
    service::delete_project(&app, &project).await?;
    accepted()
}

/// `GET /projects/:id`, with `statistics=true` GitLab's `statistics`.
pub async fn get_project(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> JsonResponse {
    let statistics = params.flag("statistics")?;
    Ok((
        StatusCode::OK,
        Json(project_view(&app, &project, &base, statistics).await?),
    ))
}

async fn project_view(
    app: &App,
    project: &crate::domain::Project,
    base: &str,
    statistics: bool,
) -> Result<Value> {
    let mut view = views::project(project, base);
    if statistics {
        let sizes = service::statistics::project_statistics(app, project).await?;
        view["statistics"] = views::statistics(&sizes);
    }
    Ok(view)
}

/// `GET /projects`, with GitLab's offset pagination headers.
pub async fn list_projects(
    State(app): State<App>,
    Caller(user): Caller,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> Result<Response> {
    let page = params.number("page", 1)?;
    let per_page = params.number("per_page", 20)?.min(100);
    let owned = params.flag("owned")?;
    let statistics = params.flag("statistics")?;
    let (projects, total) = service::list_projects(&app, &user, owned, page, per_page).await?;
    let mut body = Vec::with_capacity(projects.len());
    for project in &projects {
        body.push(project_view(&app, project, &base, statistics).await?);
    }
    let body = Value::Array(body);
    let headers = views::pagination_headers(
        &format!("{base}/api/v4/projects"),
        &params.0,
        page,
        per_page,
        total,
    );
    let mut response = (StatusCode::OK, Json(body)).into_response();
    for (name, value) in headers {
        if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

/// `PUT /projects/:id/export_schedule` (our extension).
pub async fn put_export_schedule(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> JsonResponse {
    let request = schedule::ScheduleRequest {
        relations: params.flag("relations")?,
        batched: params.flag("batched")?,
        keep: params.number("keep", schedule::DEFAULT_KEEP as usize)? as u32,
    };
    let saved = schedule::set(&app, &project, request).await?;
    let kept = schedule::kept_archives(&app, &project).await?;
    Ok((
        StatusCode::OK,
        Json(views::export_schedule(&project, &saved, &kept, &base)),
    ))
}

/// `GET /projects/:id/export_schedule`.
pub async fn get_export_schedule(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    BaseUrl(base): BaseUrl,
) -> JsonResponse {
    let saved = schedule::get(&app, &project).await?;
    let kept = schedule::kept_archives(&app, &project).await?;
    Ok((
        StatusCode::OK,
        Json(views::export_schedule(&project, &saved, &kept, &base)),
    ))
}

/// `DELETE /projects/:id/export_schedule`.
pub async fn delete_export_schedule(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
) -> Result<StatusCode> {
    schedule::delete(&app, &project).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /projects/:id/export_schedule/archives/:job_id/download`.
pub async fn scheduled_archive_download(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    Path(path): Path<HashMap<String, String>>,
) -> Result<Response> {
    deliver(
        &app,
        schedule::archive_download(
            &app,
            &project,
            path.get("job_id").map_or("", String::as_str),
        )
        .await?,
    )
    .await
}

pub async fn export_download(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
) -> Result<Response> {
    deliver(&app, service::export_download(&app, &project).await?).await
}

pub async fn schedule_relations_export(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    params: Params,
) -> JsonResponse {
    let batched = params.flag("batched")?;
    relation_export::start_run(&app, &project, batched).await?;
    accepted()
}

pub async fn relations_export_status(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    params: Params,
) -> JsonResponse {
    let view = match params.get("relation") {
        Some(relation) => {
            views::relation_export(&relation_export::state(&app, &project, relation).await?)
        }
        None => Value::Array(
            relation_export::states(&app, &project)
                .await?
                .iter()
                .map(views::relation_export)
                .collect(),
        ),
    };
    Ok((StatusCode::OK, Json(view)))
}

pub async fn relations_export_download(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    params: Params,
) -> Result<Response> {
    let relation = params
        .get("relation")
        .ok_or_else(|| Error::InvalidParameter("relation is missing".into()))?;
    let batch = match (params.flag("batched")?, params.get("batch_number")) {
        (false, None) => None,
        (true, Some(n)) => Some(
            n.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::InvalidParameter("batch_number is invalid".into()))?,
        ),
        _ => {
            return Err(Error::InvalidParameter(
                "batched, batch_number provide all or none of parameters".into(),
            ))
        }
    };
    deliver(
        &app,
        relation_export::download(&app, &project, relation, batch).await?,
    )
    .await
}

pub async fn import_status(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
) -> JsonResponse {
    let state = service::import_state(&app, &project).await?;
    Ok((StatusCode::OK, Json(views::import_status(&project, &state))))
}

/// A multipart form whose `file` field streamed straight into the blob
/// store; the other fields are small and kept in memory.
struct UploadForm {
    upload_id: String,
    key: String,
    fields: HashMap<String, String>,
}

impl UploadForm {
    async fn receive(app: &App, request: Request) -> Result<Self> {
        let mut multipart = Multipart::from_request(request, app)
            .await
            .map_err(|_| Error::InvalidParameter("file is missing".into()))?;
        let upload_id = new_id();
        let key = service::upload_key(&upload_id);
        let mut fields = HashMap::new();
        let mut has_file = false;
        let received = async {
            while let Some(field) = multipart.next_field().await.map_err(bad_multipart)? {
                let name = field.name().unwrap_or_default().to_owned();
                if name == "file" {
                    if has_file {
                        return Err(Error::BadRequest("file is given twice".into()));
                    }
                    has_file = true;
                    store_upload(app, &key, field).await?;
                } else {
                    let text = super::extract::field_text(field, &name).await?;
                    fields.insert(name, text);
                }
            }
            if !has_file {
                return Err(Error::InvalidParameter("file is missing".into()));
            }
            Ok(())
        }
        .await;
        let form = UploadForm {
            upload_id,
            key,
            fields,
        };
        match received {
            Ok(()) => Ok(form),
            Err(err) => {
                if matches!(
                    err,
                    Error::PayloadTooLarge(_) | Error::InsufficientStorage(_)
                ) {
                    // Read on a little, so the client gets to read the 413
                    // instead of a connection closed under its upload.
                    drain(&mut multipart, 64 * 1024 * 1024).await;
                }
                Err(form.discard(app, err).await)
            }
        }
    }

    /// The form's fields, read like any request's parameters.
    fn params(&self) -> Params {
        Params(self.fields.clone())
    }

    /// Drops the upload of a request that failed, and passes the error on.
    async fn discard(&self, app: &App, err: Error) -> Error {
        let _ = app
            .blobs
            .delete_prefix(&service::upload_prefix(&self.upload_id))
            .await;
        err
    }

    /// The answer to the request: the upload stays only if it succeeded.
    async fn settle(self, app: &App, outcome: Result<Value>) -> JsonResponse {
        match outcome {
            Ok(view) => Ok((StatusCode::CREATED, Json(view))),
            Err(err) => Err(self.discard(app, err).await),
        }
    }
}

/// `POST /projects/import`.
pub async fn import_project(
    State(app): State<App>,
    Caller(user): Caller,
    request: Request,
) -> JsonResponse {
    let form = UploadForm::receive(&app, request).await?;
    let started = async {
        let request = import_request(&form.params())?;
        let (project, job) = service::start_import(&app, &user, &request, &form.key).await?;
        Ok(scheduled_import(&project, job))
    }
    .await;
    form.settle(&app, started).await
}

/// The fields of an import besides its archive.
fn import_request(params: &Params) -> Result<ImportRequest> {
    let field = |name: &str| {
        params
            .get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    Ok(ImportRequest {
        path: field("path").ok_or_else(|| Error::InvalidParameter("path is missing".into()))?,
        namespace: field("namespace"),
        name: field("name"),
        overwrite: params.flag("overwrite")?,
    })
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str> {
    params
        .get(name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::InvalidParameter(format!("{name} is missing")))
}

fn scheduled_import(project: &crate::domain::Project, job: crate::domain::Job) -> Value {
    let state = service::ImportState {
        status: "scheduled",
        error: None,
        job: Some(job),
        failures: Vec::new(),
    };
    views::import_status(project, &state)
}

/// `POST /projects/remote-import`.
pub async fn remote_import(
    State(app): State<App>,
    Caller(user): Caller,
    params: Params,
) -> JsonResponse {
    let url = required(&params, "url")?;
    let request = import_request(&params)?;
    let (project, job) = service::start_remote_import(&app, &user, &request, url).await?;
    Ok((StatusCode::CREATED, Json(scheduled_import(&project, job))))
}

/// `POST /projects/remote-import-s3`: fetched through a presigned URL, so
/// the secret key is used once and never stored.
pub async fn remote_import_s3(
    State(app): State<App>,
    Caller(user): Caller,
    params: Params,
) -> JsonResponse {
    let object = remote::S3Object {
        region: required(&params, "region")?.to_owned(),
        bucket: required(&params, "bucket_name")?.to_owned(),
        key: required(&params, "file_key")?.to_owned(),
        access_key_id: required(&params, "access_key_id")?.to_owned(),
        secret_access_key: required(&params, "secret_access_key")?.to_owned(),
    };
    let request = import_request(&params)?;
    let url = remote::presign_s3_get(
        &object,
        app.settings.s3_endpoint.as_deref(),
        crate::domain::now(),
        std::time::Duration::from_secs(7 * 24 * 3600),
    )?;
    let (project, job) = service::start_fetched_import(&app, &user, &request, url).await?;
    Ok((StatusCode::CREATED, Json(scheduled_import(&project, job))))
}

/// `POST /projects/import/authorize`: the import waits for its archive at a
/// presigned URL, past API Gateway's body limit.
pub async fn authorize_import(
    State(app): State<App>,
    Caller(user): Caller,
    params: Params,
) -> JsonResponse {
    let request = import_request(&params)?;
    let (project, job, url) = service::authorize_import(&app, &user, &request).await?;
    let expires_at = job.created_at
        + chrono::Duration::from_std(service::UPLOAD_URL_TTL).map_err(Error::internal)?;
    let mut view = scheduled_import(&project, job);
    view["upload"] = json!({
        "url": url,
        "method": "PUT",
        "expires_at": crate::domain::gitlab_time(&expires_at),
    });
    Ok((StatusCode::CREATED, Json(view)))
}

/// `PUT /-/blobs/*key` with an upload signature: the local stand-in for a
/// presigned S3 PUT. The URL takes one upload: a second one while the first
/// is under way is refused (`409`), and once the upload landed the URL is
/// spent (`403`).
pub async fn blob_upload(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Result<StatusCode> {
    verify_signed(&app, Action::Upload, &key, &query)?;
    if !service::upload_awaited(&app, &key).await? {
        return Err(refuse_upload(body, Error::Forbidden).await);
    }
    let Some(_slot) = UploadSlot::take(&key) else {
        let in_use = Error::Conflict("409 the upload URL is already in use".into());
        return Err(refuse_upload(body, in_use).await);
    };
    put_limited(&app, &key, body.into_data_stream(), None).await?;
    service::upload_landed(&app, &key).await?;
    Ok(StatusCode::OK)
}

/// Reads on (a little) before refusing an upload, so that the client gets
/// to read the answer instead of a connection closed under its body.
async fn refuse_upload(body: Body, err: Error) -> Error {
    let mut stream = body.into_data_stream();
    let mut left = 64 * 1024 * 1024usize;
    while let Some(Ok(chunk)) = stream.next().await {
        left = left.saturating_sub(chunk.len());
        if left == 0 {
            break;
        }
    }
    err
}

/// A key being uploaded to in this process: one upload per URL at a time.
struct UploadSlot(String);

static UPLOADS_UNDER_WAY: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

impl UploadSlot {
    fn take(key: &str) -> Option<UploadSlot> {
        let mut under_way = UPLOADS_UNDER_WAY.lock().unwrap_or_else(|e| e.into_inner());
        under_way
            .insert(key.to_owned())
            .then(|| UploadSlot(key.to_owned()))
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut under_way = UPLOADS_UNDER_WAY.lock().unwrap_or_else(|e| e.into_inner());
        under_way.remove(&self.0);
    }
}

/// Checks a signed blob URL: exactly the action's parameters, a valid
/// signature for this action on this key, not expired.
fn verify_signed(
    app: &App,
    action: Action,
    key: &str,
    query: &HashMap<String, String>,
) -> Result<()> {
    let signer = app.signer.as_ref().ok_or(Error::Forbidden)?;
    let expected = action.parameters();
    if query.len() != expected.len() || !expected.iter().all(|p| query.contains_key(*p)) {
        return Err(Error::Forbidden);
    }
    let field = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    let expires: i64 = field("expires").parse().map_err(|_| Error::Forbidden)?;
    let signed = signer.verify(
        action,
        key,
        expires,
        field("filename"),
        field("signature"),
        now().timestamp(),
    );
    if signed {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

/// `POST /projects/import-relation`.
pub async fn import_relation(
    State(app): State<App>,
    Caller(user): Caller,
    request: Request,
) -> JsonResponse {
    let form = UploadForm::receive(&app, request).await?;
    let started = async {
        let params = form.params();
        let path = required(&params, "path")?;
        let relation = required(&params, "relation")?;
        let (project, job) =
            service::start_relation_import(&app, &user, path, relation, &form.key).await?;
        Ok(views::relation_import(&project, &job))
    }
    .await;
    form.settle(&app, started).await
}

/// `GET /projects/:id/relation-imports`.
pub async fn relation_imports(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
) -> JsonResponse {
    let jobs = service::relation_imports(&app, &project).await?;
    let view = jobs
        .iter()
        .map(|job| views::relation_import(&project, job))
        .collect();
    Ok((StatusCode::OK, Json(Value::Array(view))))
}

/// Reads and drops up to `budget` more bytes of a multipart body.
async fn drain(multipart: &mut Multipart, budget: usize) {
    let mut left = budget;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                return;
            }
        }
    }
}

fn bad_multipart(err: axum::extract::multipart::MultipartError) -> Error {
    Error::BadRequest(format!("invalid multipart body: {}", err.body_text()))
}

async fn store_upload(
    app: &App,
    key: &str,
    field: axum::extract::multipart::Field<'_>,
) -> Result<u64> {
    let cut_short = "invalid multipart body: the upload was cut short";
    put_limited(app, key, field, Some(cut_short)).await
}

/// Stores a client's upload at `key`, at most `--max-upload-bytes` (`413`
/// above). A client that stops sending mid-way gets `400 cut_short` when
/// given, a storage error otherwise.
async fn put_limited<S, E>(app: &App, key: &str, body: S, cut_short: Option<&str>) -> Result<u64>
where
    S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Send,
    E: std::error::Error + Send + Sync + 'static,
{
    let limit = app.settings.max_upload_bytes;
    let too_large = Arc::new(AtomicBool::new(false));
    let client_error = Arc::new(AtomicBool::new(false));
    let (flag_large, flag_client) = (too_large.clone(), client_error.clone());
    let mut seen = 0u64;
    let body = body.map(move |chunk| {
        let chunk = chunk.map_err(|err| {
            flag_client.store(true, Ordering::Relaxed);
            io::Error::other(err)
        })?;
        seen += chunk.len() as u64;
        if seen > limit {
            flag_large.store(true, Ordering::Relaxed);
            return Err(io::Error::other("upload too large"));
        }
        Ok(chunk)
    });
    match app.blobs.put(key, Box::pin(body)).await {
        Ok(size) => Ok(size),
        Err(_) if too_large.load(Ordering::Relaxed) => Err(Error::PayloadTooLarge(format!(
            "413 Request Entity Too Large: the file is larger than {limit} bytes"
        ))),
        Err(err) => match cut_short {
            Some(message) if client_error.load(Ordering::Relaxed) => {
                Err(Error::BadRequest(message.into()))
            }
            _ => Err(err),
        },
    }
}

/// `DELETE /personal_access_tokens/:id`: revokes a token (GitLab: `204`).
pub async fn revoke_token(
    State(app): State<App>,
    Caller(user): Caller,
    Path(token_id): Path<String>,
) -> Result<StatusCode> {
    let id = token_id
        .parse::<u64>()
        .map_err(|_| Error::not_found("Token"))?;
    auth::revoke_token(&app, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /personal_access_tokens/self`: revokes the token in use.
pub async fn revoke_own_token(
    State(app): State<App>,
    CallerToken(user, token): CallerToken,
) -> Result<StatusCode> {
    auth::revoke_token(&app, &user, token.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn current_user(Caller(user): Caller, BaseUrl(base): BaseUrl) -> JsonResponse {
    Ok((StatusCode::OK, Json(views::user(&user, &base))))
}

fn require_admin(user: &crate::domain::User) -> Result<()> {
    if user.is_admin {
        Ok(())
    } else {
        Err(Error::Forbidden)
    }
}

pub async fn create_user(
    State(app): State<App>,
    Caller(caller): Caller,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> JsonResponse {
    require_admin(&caller)?;
    let username = params
        .get("username")
        .filter(|u| crate::domain::is_valid_path(u))
        .ok_or_else(|| Error::InvalidParameter("username is missing".into()))?;
    let name = params.get("name").unwrap_or(username);
    let user = app
        .users
        .create_user(username, name, params.flag("admin")?)
        .await?;
    Ok((StatusCode::CREATED, Json(views::user(&user, &base))))
}

pub async fn create_token(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(user_id): Path<String>,
    params: Params,
) -> JsonResponse {
    require_admin(&caller)?;
    let user = match user_id.parse() {
        Ok(id) => app.users.user(id).await?,
        Err(_) => None,
    }
    .ok_or_else(|| Error::not_found("User"))?;
    let name = params
        .get("name")
        .ok_or_else(|| Error::InvalidParameter("name is missing".into()))?;
    let expires_at = match params.get("expires_at").filter(|v| !v.is_empty()) {
        None => None,
        Some(date) => {
            let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
                .map_err(|_| Error::InvalidParameter("expires_at is invalid".into()))?;
            Some(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        }
    };
    let (token, secret) = auth::issue_token(&app, &user, name, expires_at).await?;
    Ok((StatusCode::CREATED, Json(views::token(&token, &secret))))
}

/// Serves a blob behind a signed, expiring URL (the embedded stand-in for an
/// S3 presigned URL).
pub async fn blob_download(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response> {
    verify_signed(&app, Action::Download, &key, &query)?;
    let file_name = query
        .get("filename")
        .map(String::as_str)
        .unwrap_or_default();
    attachment(&app, &key, file_name).await
}

/// A download: `302` to a signed URL, or the file itself, as configured.
async fn deliver(app: &App, download: service::Download) -> Result<Response> {
    if app.settings.download_redirect {
        let url = app
            .blobs
            .download_url(
                &download.key,
                &download.file_name,
                app.settings.download_ttl,
            )
            .await?;
        return Ok((StatusCode::FOUND, [(LOCATION, url)]).into_response());
    }
    attachment(app, &download.key, &download.file_name).await
}

/// A stored blob streamed as a file named `file_name`.
async fn attachment(app: &App, key: &str, file_name: &str) -> Result<Response> {
    let body = app.blobs.get(key).await?;
    let content_type = if file_name.ends_with(".gz") {
        "application/gzip"
    } else {
        "application/octet-stream"
    };
    let ascii_name: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let disposition = format!(
        "attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{}",
        utf8_percent_encode(file_name, NON_ALPHANUMERIC)
    );
    let mut response = (
        StatusCode::OK,
        [
            (CONTENT_TYPE, content_type.to_owned()),
            (CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response();
    // Its size, as GitLab's downloads (and S3's) give it: clients show
    // progress, and a remote import's `HEAD` checks it.
    let listed = app.blobs.list(key).await?;
    if let Some(blob) = listed.iter().find(|blob| blob.key == key) {
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, blob.size.into());
    }
    Ok(response)
}
