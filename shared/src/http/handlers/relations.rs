//! The relations export API, and importing one relation.

use super::*;

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
    let view = match params.get("relation")? {
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
    range: Range,
    params: Params,
) -> Result<Response> {
    let relation = params
        .get("relation")?
        .ok_or_else(|| Error::InvalidParameter("relation is missing".into()))?;
    let batch = match (params.flag("batched")?, params.get("batch_number")?) {
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
        range,
    )
    .await
}

/// `POST /projects/import-relation`.
pub async fn import_relation(
    State(app): State<App>,
    Caller(user): Caller,
    request: Request,
) -> JsonResponse {
    let form = UploadForm::receive(&app, &user, request).await?;
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
