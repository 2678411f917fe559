//! Who is calling: personal access tokens, stored as hashes only.

use crate::domain::{now, Token, User};
use crate::signing::{random_secret, token_hash};
use crate::{App, Error, Result};

/// The user a token belongs to, or `Unauthorized` for a missing, unknown,
/// expired or revoked token. Lookup is by hash, so the token itself is never
/// compared or stored.
pub async fn authenticate(app: &App, token: Option<&str>) -> Result<User> {
    authenticate_token(app, token).await.map(|(user, _)| user)
}

/// The user and the token record a token stands for.
pub async fn authenticate_token(app: &App, token: Option<&str>) -> Result<(User, Token)> {
    let token = token.filter(|t| !t.is_empty()).ok_or(Error::Unauthorized)?;
    let record = app
        .users
        .token_by_hash(token_hash(token))
        .await?
        .filter(|t| t.is_usable(now()))
        .ok_or(Error::Unauthorized)?;
    let user = app
        .users
        .user(record.user_id)
        .await?
        .ok_or(Error::Unauthorized)?;
    Ok((user, record))
}

/// Revokes a token: the caller's own, or any for an administrator. Someone
/// else's token answers like a missing one.
pub async fn revoke_token(app: &App, caller: &User, token_id: u64) -> Result<()> {
    let not_found = || Error::not_found("Token");
    let token = app.users.token(token_id).await?.ok_or_else(not_found)?;
    if !(caller.is_admin || caller.id == token.user_id) {
        return Err(not_found());
    }
    app.users.revoke_token(token_id).await?;
    Ok(())
}

/// Issues a new token for a user and returns it; only its hash is kept.
pub async fn issue_token(
    app: &App,
    user: &User,
    name: &str,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(crate::domain::Token, String)> {
    let token = format!("glpat-{}", random_secret(20));
    let record = app
        .users
        .add_token(user.id, name, token_hash(&token), expires_at)
        .await?;
    Ok((record, token))
}

/// Shortest root token the stack accepts (its `RootToken` parameter's
/// `MinLength`): a guessable administrator token is refused at start.
pub const MIN_ROOT_TOKEN_LEN: usize = 20;

/// What `ensure_root` did.
pub enum RootToken {
    /// A token was generated now: show it, it cannot be shown again.
    Generated(String),
    /// The configured token (LOCAL_ROOT_TOKEN) is registered.
    Configured,
    /// Root exists and no token was configured: earlier tokens still work.
    Existing,
}

/// Makes sure the administrator `root` exists and, if `configured` is given,
/// that it is one of root's tokens.
pub async fn ensure_root(app: &App, configured: Option<&str>) -> Result<RootToken> {
    let (root, created) = match app.users.user_by_username("root").await? {
        Some(root) => (root, false),
        None => (
            app.users.create_user("root", "Administrator", true).await?,
            true,
        ),
    };
    if let Some(token) = configured.filter(|t| !t.is_empty()) {
        let hash = token_hash(token);
        if app.users.token_by_hash(hash).await?.is_none() {
            app.users
                .add_token(root.id, "LOCAL_ROOT_TOKEN", hash, None)
                .await?;
        }
        return Ok(RootToken::Configured);
    }
    if created {
        let (_, token) = issue_token(app, &root, "root", None).await?;
        return Ok(RootToken::Generated(token));
    }
    Ok(RootToken::Existing)
}
