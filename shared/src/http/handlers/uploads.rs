//! The signed blob routes the local server stands in for S3 with:
//! presigned uploads and downloads.

use super::*;

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
pub(super) async fn refuse_upload(body: Body, err: Error) -> Error {
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

/// The uploads one user has under way in this process, at most
/// `MAX_UPLOADS_PER_USER`: a user sending many slow uploads at once gets
/// `429` for the ones past it instead of taking every connection.
pub(super) struct UserUploads(crate::domain::UserId);

/// GitLab lets a user start 6 imports a minute; 16 at once is far past
/// any client's need and a small share of the connections.
pub const MAX_UPLOADS_PER_USER: usize = 16;

static UPLOADS_BY_USER: std::sync::Mutex<std::collections::BTreeMap<crate::domain::UserId, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

impl UserUploads {
    pub(super) fn enter(user: crate::domain::UserId) -> Result<UserUploads> {
        let mut by_user = UPLOADS_BY_USER.lock().unwrap_or_else(|e| e.into_inner());
        let count = by_user.entry(user).or_default();
        if *count >= MAX_UPLOADS_PER_USER {
            return Err(Error::TooManyRequests { retry_after: 1 });
        }
        *count += 1;
        Ok(UserUploads(user))
    }
}

impl Drop for UserUploads {
    fn drop(&mut self) {
        let mut by_user = UPLOADS_BY_USER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = by_user.get_mut(&self.0) {
            *count -= 1;
            if *count == 0 {
                by_user.remove(&self.0);
            }
        }
    }
}

/// A key being uploaded to in this process: one upload per URL at a time.
pub(super) struct UploadSlot(String);

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
pub(super) fn verify_signed(
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

/// Serves a blob behind a signed, expiring URL (the embedded stand-in for an
/// S3 presigned URL).
pub async fn blob_download(
    State(app): State<App>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    range: Range,
) -> Result<Response> {
    verify_signed(&app, Action::Download, &key, &query)?;
    let file_name = query
        .get("filename")
        .map(String::as_str)
        .unwrap_or_default();
    attachment(&app, &key, file_name, range).await
}
