//! `UserStore`: users, namespaces, tokens and rate windows.

use async_trait::async_trait;

use super::*;

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn create_user(&self, username: &str, name: &str, is_admin: bool) -> Result<User> {
        let (username, name) = (username.to_owned(), name.to_owned());
        let lookup = crate::domain::name_key(&username);
        self.db
            .write(move |txn| {
                let mut by_name = txn.open_table(USERS_BY_NAME)?;
                let mut ns_by_path = txn.open_table(NAMESPACES_BY_PATH)?;
                if by_name.get(lookup.as_str())?.is_some()
                    || ns_by_path.get(lookup.as_str())?.is_some()
                {
                    return Err(Error::Conflict("Username has already been taken".into()));
                }
                let id = next_id(txn, "user")?;
                let user = User {
                    id,
                    username: username.clone(),
                    name: name.clone(),
                    is_admin,
                    created_at: now(),
                };
                let namespace = Namespace {
                    id,
                    path: username.clone(),
                    name,
                    owner_id: id,
                };
                txn.open_table(USERS)?
                    .insert(id, encode(&user)?.as_slice())?;
                by_name.insert(lookup.as_str(), id)?;
                txn.open_table(NAMESPACES)?
                    .insert(id, encode(&namespace)?.as_slice())?;
                ns_by_path.insert(lookup.as_str(), id)?;
                Ok(user)
            })
            .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.db.read(move |txn| get_json(txn, USERS, id)).await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let username = crate::domain::name_key(username);
        self.db
            .read(move |txn| {
                let by_name = txn.open_table(USERS_BY_NAME)?;
                let Some(id) = by_name.get(username.as_str())? else {
                    return Ok(None);
                };
                get_json(txn, USERS, id.value())
            })
            .await
    }

    async fn add_token(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: [u8; 32],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Token> {
        let name = name.to_owned();
        self.db
            .write(move |txn| {
                let token = Token {
                    id: next_id(txn, "token")?,
                    user_id,
                    name,
                    created_at: now(),
                    expires_at,
                    revoked: false,
                };
                txn.open_table(TOKENS)?
                    .insert(token_hash.as_slice(), encode(&token)?.as_slice())?;
                txn.open_table(TOKEN_IDS)?
                    .insert(token.id, token_hash.as_slice())?;
                Ok(token)
            })
            .await
    }

    async fn token_by_hash(&self, token_hash: [u8; 32]) -> Result<Option<Token>> {
        self.db
            .read(move |txn| get_json(txn, TOKENS, token_hash.as_slice()))
            .await
    }

    async fn token(&self, id: u64) -> Result<Option<Token>> {
        self.db
            .read(move |txn| {
                let ids = txn.open_table(TOKEN_IDS)?;
                let Some(hash) = ids.get(id)? else {
                    return Ok(None);
                };
                get_json(txn, TOKENS, hash.value())
            })
            .await
    }

    async fn revoke_token(&self, id: u64) -> Result<bool> {
        self.db
            .write(move |txn| {
                let ids = txn.open_table(TOKEN_IDS)?;
                let Some(hash) = ids.get(id)?.map(|h| h.value().to_vec()) else {
                    return Ok(false);
                };
                let mut tokens = txn.open_table(TOKENS)?;
                let mut token: Token = match tokens.get(hash.as_slice())? {
                    Some(bytes) => decode(bytes.value())?,
                    None => return Ok(false),
                };
                token.revoked = true;
                tokens.insert(hash.as_slice(), encode(&token)?.as_slice())?;
                Ok(true)
            })
            .await
    }

    async fn namespace(&self, id: NamespaceId) -> Result<Option<Namespace>> {
        self.db.read(move |txn| get_json(txn, NAMESPACES, id)).await
    }

    async fn namespace_by_path(&self, path: &str) -> Result<Option<Namespace>> {
        let path = crate::domain::name_key(path);
        self.db
            .read(move |txn| {
                let by_path = txn.open_table(NAMESPACES_BY_PATH)?;
                let Some(id) = by_path.get(path.as_str())? else {
                    return Ok(None);
                };
                get_json(txn, NAMESPACES, id.value())
            })
            .await
    }

    async fn take_rate_slot(
        &self,
        user_id: UserId,
        action: &str,
        window_start: i64,
        limit: u32,
    ) -> Result<bool> {
        let action = action.to_owned();
        self.db
            .write(move |txn| {
                let mut table = txn.open_table(RATE_WINDOWS)?;
                let a = action.as_str();
                // Past windows of this user and action are of no use any more.
                let past: Vec<i64> = table
                    .range((user_id, a, i64::MIN)..(user_id, a, window_start))?
                    .map(|item| item.map(|(key, _)| key.value().2))
                    .collect::<Result<_, _>>()?;
                for window in past {
                    table.remove((user_id, a, window))?;
                }
                let used = table
                    .get((user_id, a, window_start))?
                    .map_or(0, |v| v.value());
                if used >= limit {
                    return Ok(false);
                }
                table.insert((user_id, a, window_start), used + 1)?;
                Ok(true)
            })
            .await
    }
}
