//! Imports: a streamed upload, a remote URL or S3 object, a presigned
//! upload (`import/upload-url`), and their status.

use super::*;

pub async fn import_status(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
) -> JsonResponse {
    let state = service::import_state(&app, &project).await?;
    Ok((StatusCode::OK, Json(views::import_status(&project, &state))))
}

/// A multipart form whose `file` field streamed straight into the blob
/// store; the other fields are small and kept in memory.
pub(super) struct UploadForm {
    pub(super) upload_id: String,
    pub(super) key: String,
    pub(super) fields: HashMap<String, String>,
}

impl UploadForm {
    pub(super) async fn receive(
        app: &App,
        user: &crate::domain::User,
        request: Request,
    ) -> Result<Self> {
        // Before a byte of the body is read: one user's uploads never take
        // more than their share of the server's connections.
        let _under_way = UserUploads::enter(user.id)?;
        let mut multipart = Multipart::from_request(request, app)
            .await
            .map_err(|_| Error::InvalidParameter("file is missing".into()))?;
        let upload_id = new_id();
        let key = service::upload_key(&upload_id);
        let mut fields = HashMap::new();
        let mut budget = crate::http::extract::FieldBudget::default();
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
                    let text = crate::http::extract::field_text(field, &name, &mut budget).await?;
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
                    crate::http::extract::drain_refused(&mut multipart).await;
                }
                Err(form.discard(app, err).await)
            }
        }
    }

    /// The form's fields, read like any request's parameters.
    pub(super) fn params(&self) -> Params {
        Params::from_texts(self.fields.clone())
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
    pub(super) async fn settle(self, app: &App, outcome: Result<Value>) -> JsonResponse {
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
    let form = UploadForm::receive(&app, &user, request).await?;
    let started = async {
        let request = import_request(&form.params())?;
        let (project, job) = service::start_import(&app, &user, &request, &form.key).await?;
        Ok(scheduled_import(&project, job))
    }
    .await;
    form.settle(&app, started).await
}

/// The fields of an import besides its archive.
pub(super) fn import_request(params: &Params) -> Result<ImportRequest> {
    let field = |name: &str| {
        Ok::<_, Error>(
            params
                .get(name)?
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        )
    };
    Ok(ImportRequest {
        path: field("path")?.ok_or_else(|| Error::InvalidParameter("path is missing".into()))?,
        namespace: field("namespace")?,
        name: field("name")?,
        overwrite: params.flag("overwrite")?,
        overrides: service::overrides::from_params(params.entries())?,
    })
}

pub(super) fn scheduled_import(project: &crate::domain::Project, job: crate::domain::Job) -> Value {
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
    let (project, job) = service::start_s3_import(&app, &user, &request, &object).await?;
    Ok((StatusCode::CREATED, Json(scheduled_import(&project, job))))
}

/// `POST /projects/import/upload-url`: the import waits for its archive at a
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

/// GitLab's `POST /projects/import/authorize` is Workhorse's pre-upload
/// handshake (`require_gitlab_workhorse!`): without Workhorse in front,
/// GitLab answers `403`, and so does this server, which has no Workhorse.
/// Its own presigned upload is `import/upload-url`.
pub async fn workhorse_authorize(Caller(_): Caller) -> JsonResponse {
    Err(Error::Forbidden)
}

pub(super) fn bad_multipart(err: axum::extract::multipart::MultipartError) -> Error {
    Error::BadRequest(format!("invalid multipart body: {}", err.body_text()))
}

pub(super) async fn store_upload(
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
pub(super) async fn put_limited<S, E>(
    app: &App,
    key: &str,
    body: S,
    cut_short: Option<&str>,
) -> Result<u64>
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
