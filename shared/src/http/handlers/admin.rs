//! The current user, and the administrator's users and tokens.

use super::*;

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

/// `GET /personal_access_tokens/self`: the token the request carries.
pub async fn own_token(CallerToken(_, token): CallerToken) -> JsonResponse {
    Ok((StatusCode::OK, Json(views::token_info(&token))))
}

/// `GET /version` (and `/metadata`): the GitLab version a destination
/// reads before it migrates a project from here.
pub async fn version(Caller(_): Caller) -> JsonResponse {
    Ok((StatusCode::OK, Json(views::version())))
}

pub async fn current_user(Caller(user): Caller, BaseUrl(base): BaseUrl) -> JsonResponse {
    Ok((StatusCode::OK, Json(views::user(&user, &base))))
}

pub(super) fn require_admin(user: &crate::domain::User) -> Result<()> {
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
        .get("username")?
        .filter(|u| crate::domain::is_valid_path(u))
        .ok_or_else(|| Error::InvalidParameter("username is missing".into()))?;
    let name = params.get("name")?.unwrap_or(username);
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
        .get("name")?
        .ok_or_else(|| Error::InvalidParameter("name is missing".into()))?;
    let expires_at = match params.get("expires_at")?.filter(|v| !v.is_empty()) {
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
