//! GitLab's bulk import API: migrations by direct transfer.

use super::*;
use crate::http::extract::NestedParams;
use crate::service::bulk_imports::{self, BulkImportState};

/// `POST /bulk_imports`.
pub async fn create_bulk_import(
    State(app): State<App>,
    Caller(user): Caller,
    NestedParams(body): NestedParams,
) -> JsonResponse {
    let request = bulk_imports::parse_request(&body)?;
    let import = bulk_imports::create(&app, &user, request).await?;
    let mut state = bulk_imports::find(&app, &user, import.id).await?;
    // As created, as GitLab answers: a worker may have started (or even
    // failed) its entities before this answer is written.
    state.status = crate::domain::BulkStatus::Created;
    Ok((StatusCode::CREATED, Json(views::bulk_import(&state))))
}

/// `GET /bulk_imports`.
pub async fn list_bulk_imports(
    State(app): State<App>,
    Caller(user): Caller,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> Result<Response> {
    let filter = Filter::read(&params)?;
    let states = bulk_imports::list(&app, &user, filter.newest_first).await?;
    let items: Vec<Value> = states
        .iter()
        .filter(|s| filter.keeps(s.status))
        .map(views::bulk_import)
        .collect();
    paginated(&format!("{base}/api/v4/bulk_imports"), &params, items)
}

/// `GET /bulk_imports/entities`: every entity of the user's migrations.
pub async fn list_all_bulk_entities(
    State(app): State<App>,
    Caller(user): Caller,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> Result<Response> {
    let filter = Filter::read(&params)?;
    let states = bulk_imports::list(&app, &user, filter.newest_first).await?;
    let mut items: Vec<(u64, Value)> = Vec::new();
    for state in &states {
        for entity in state.entities.iter().filter(|e| filter.keeps(e.status)) {
            items.push((
                entity.entity.id,
                views::bulk_entity(state.import.id, entity),
            ));
        }
    }
    items.sort_by_key(|(id, _)| *id);
    if filter.newest_first {
        items.reverse();
    }
    let items = items.into_iter().map(|(_, v)| v).collect();
    paginated(
        &format!("{base}/api/v4/bulk_imports/entities"),
        &params,
        items,
    )
}

/// `GET /bulk_imports/:import_id`.
pub async fn get_bulk_import(
    State(app): State<App>,
    Caller(user): Caller,
    Path(import_id): Path<String>,
) -> JsonResponse {
    let state = bulk_imports::find(&app, &user, id_param(&import_id, "import_id")?).await?;
    Ok((StatusCode::OK, Json(views::bulk_import(&state))))
}

/// `GET /bulk_imports/:import_id/entities`.
pub async fn list_bulk_entities(
    State(app): State<App>,
    Caller(user): Caller,
    BaseUrl(base): BaseUrl,
    Path(import_id): Path<String>,
    params: Params,
) -> Result<Response> {
    let import_id = id_param(&import_id, "import_id")?;
    let filter = Filter::read(&params)?;
    let state = bulk_imports::find(&app, &user, import_id).await?;
    let mut items: Vec<Value> = state
        .entities
        .iter()
        .filter(|e| filter.keeps(e.status))
        .map(|e| views::bulk_entity(import_id, e))
        .collect();
    if params.get("sort")? == Some("desc") {
        items.reverse();
    }
    let url = format!("{base}/api/v4/bulk_imports/{import_id}/entities");
    paginated(&url, &params, items)
}

/// `GET /bulk_imports/:import_id/entities/:entity_id`.
pub async fn get_bulk_entity(
    State(app): State<App>,
    Caller(user): Caller,
    Path((import_id, entity_id)): Path<(String, String)>,
) -> JsonResponse {
    let import_id = id_param(&import_id, "import_id")?;
    let entity_id = id_param(&entity_id, "entity_id")?;
    let state = bulk_imports::find(&app, &user, import_id).await?;
    let entity = entity_of(&state, entity_id)?;
    Ok((StatusCode::OK, Json(views::bulk_entity(import_id, entity))))
}

/// `GET /bulk_imports/:import_id/entities/:entity_id/failures`.
pub async fn bulk_entity_failures(
    State(app): State<App>,
    Caller(user): Caller,
    BaseUrl(base): BaseUrl,
    Path((import_id, entity_id)): Path<(String, String)>,
    params: Params,
) -> Result<Response> {
    let import_id = id_param(&import_id, "import_id")?;
    let entity_id = id_param(&entity_id, "entity_id")?;
    let state = bulk_imports::find(&app, &user, import_id).await?;
    let entity = entity_of(&state, entity_id)?;
    let Value::Array(items) = views::bulk_failures(entity) else {
        return Err(Error::internal("failures are a list"));
    };
    let url = format!("{base}/api/v4/bulk_imports/{import_id}/entities/{entity_id}/failures");
    paginated(&url, &params, items)
}

/// `POST /bulk_imports/:import_id/cancel`.
pub async fn cancel_bulk_import(
    State(app): State<App>,
    Caller(user): Caller,
    Path(import_id): Path<String>,
) -> JsonResponse {
    let state = bulk_imports::cancel(&app, &user, id_param(&import_id, "import_id")?).await?;
    Ok((StatusCode::OK, Json(views::bulk_import(&state))))
}

fn id_param(raw: &str, name: &str) -> Result<u64> {
    raw.parse()
        .map_err(|_| Error::InvalidParameter(format!("{name} is invalid")))
}

fn entity_of(state: &BulkImportState, entity_id: u64) -> Result<&bulk_imports::EntityState> {
    state
        .entities
        .iter()
        .find(|e| e.entity.id == entity_id)
        .ok_or_else(|| Error::NotFound("404 Not found".into()))
}

/// The list filters every listing route takes.
struct Filter {
    status: Option<crate::domain::BulkStatus>,
    newest_first: bool,
}

impl Filter {
    fn read(params: &Params) -> Result<Filter> {
        let status = match params.get("status")? {
            None => None,
            Some(text) => Some(crate::domain::BulkStatus::parse(text).ok_or_else(|| {
                Error::InvalidParameter("status does not have a valid value".into())
            })?),
        };
        let newest_first = match params.get("sort")? {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => {
                return Err(Error::InvalidParameter(
                    "sort does not have a valid value".into(),
                ))
            }
        };
        Ok(Filter {
            status,
            newest_first,
        })
    }

    fn keeps(&self, status: crate::domain::BulkStatus) -> bool {
        self.status.is_none_or(|wanted| wanted == status)
    }
}

/// One page of `items`, with GitLab's pagination headers.
fn paginated(url: &str, params: &Params, items: Vec<Value>) -> Result<Response> {
    let page = params.number("page", 1)?;
    let per_page = params.number("per_page", 20)?.min(100);
    let total = items.len() as u64;
    let body: Vec<Value> = items
        .into_iter()
        .skip(page.saturating_sub(1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    let headers = views::pagination_headers(url, params.texts(), page, per_page, total);
    Ok(with_headers(Value::Array(body), headers))
}
