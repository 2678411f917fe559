//! Full exports: scheduling one (with `upload[url]`), its status and
//! download, and the export schedule with its kept archives.

use super::*;

pub async fn schedule_export(
    State(app): State<App>,
    CallerProject { user, project }: CallerProject,
    params: Params,
) -> JsonResponse {
    let description = params.get("description")?.map(str::to_owned);
    let upload = upload_target(&params, app.settings.allow_local_requests)?;
    service::schedule_export(&app, &user, &project, description, upload).await?;
    accepted()
}

/// GitLab's `upload[url]`, `upload[http_method]` and (ours)
/// `upload[headers][Name]`.
pub(super) fn upload_target(params: &Params, allow_local: bool) -> Result<Option<UploadTarget>> {
    let Some(url) = params.get("upload[url]")?.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    remote::check_url(url, "upload[url]", allow_local)?;
    let method = params
        .get("upload[http_method]")?
        .filter(|m| !m.is_empty())
        .unwrap_or("PUT")
        .to_ascii_uppercase();
    if method != "PUT" && method != "POST" {
        return Err(Error::InvalidParameter(
            "upload[http_method] does not have a valid value".into(),
        ));
    }
    let headers = params
        .entries()
        .filter_map(|(name, value)| {
            let header = name.strip_prefix("upload[headers][")?.strip_suffix(']')?;
            let value = value.ok_or_else(|| Error::InvalidParameter(format!("{name} is invalid")));
            Some(value.map(|value| (header.to_owned(), value.to_owned())))
        })
        .collect::<Result<_>>()?;
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
    range: Range,
) -> Result<Response> {
    deliver(
        &app,
        schedule::archive_download(
            &app,
            &project,
            path.get("job_id").map_or("", String::as_str),
        )
        .await?,
        range,
    )
    .await
}

pub async fn export_download(
    State(app): State<App>,
    CallerProject { user, project }: CallerProject,
    range: Range,
) -> Result<Response> {
    service::check_download_rate(&app, &user, &project).await?;
    deliver(&app, service::export_download(&app, &project).await?, range).await
}
