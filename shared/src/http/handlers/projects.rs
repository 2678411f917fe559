//! The projects API: one project (with `statistics`), the list, deletion.

use super::*;

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

pub(super) async fn project_view(
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
    let search = params.get("search")?;
    let (projects, total) =
        service::list_projects(&app, &user, owned, search, page, per_page).await?;
    let mut body = Vec::with_capacity(projects.len());
    for project in &projects {
        body.push(project_view(&app, project, &base, statistics).await?);
    }
    let body = Value::Array(body);
    let headers = views::pagination_headers(
        &format!("{base}/api/v4/projects"),
        params.texts(),
        page,
        per_page,
        total,
    );
    Ok(with_headers(body, headers))
}

/// `GET /projects/:id/members` and `/members/all` (a project here has no
/// group to inherit members from: both list the same), with GitLab's
/// offset pagination headers.
pub async fn list_members(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    BaseUrl(base): BaseUrl,
    uri: axum::http::Uri,
    params: Params,
) -> Result<Response> {
    let page = params.number("page", 1)?;
    let per_page = params.number("per_page", 20)?.clamp(1, 100);
    let (members, total) = service::members::page(&app, &project, page, per_page).await?;
    let body = Value::Array(members.iter().map(|m| views::member(m, &base)).collect());
    let all = if uri.path().ends_with("/all") {
        "/all"
    } else {
        ""
    };
    let headers = views::pagination_headers(
        &format!("{base}/api/v4/projects/{}/members{all}", project.id),
        params.texts(),
        page,
        per_page,
        total,
    );
    Ok(with_headers(body, headers))
}

/// `GET /projects/:id/badges`: the badges its archive brought, in
/// GitLab's `Badge` shape, with GitLab's pagination headers (what a
/// destination's badges pipeline reads).
pub async fn list_badges(
    State(app): State<App>,
    CallerProject { project, .. }: CallerProject,
    BaseUrl(base): BaseUrl,
    params: Params,
) -> Result<Response> {
    let page = params.number("page", 1)?;
    let per_page = params.number("per_page", 20)?.clamp(1, 100);
    let (badges, total) = service::members::badges(&app, &project, page, per_page).await?;
    let body = Value::Array(badges.iter().map(views::badge).collect());
    let headers = views::pagination_headers(
        &format!("{base}/api/v4/projects/{}/badges", project.id),
        params.texts(),
        page,
        per_page,
        total,
    );
    Ok(with_headers(body, headers))
}
