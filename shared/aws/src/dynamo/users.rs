//! `UserStore`: users, namespaces, tokens and rate windows.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{ddb_error, get_s, key, keys, n, s, with_data, DynamoStore};
use shared::domain::{now, Namespace, NamespaceId, Token, User, UserId};
use shared::ports::UserStore;
use shared::{Error, Result};

#[async_trait]
impl UserStore for DynamoStore {
    async fn create_user(&self, username: &str, name: &str, is_admin: bool) -> Result<User> {
        let id = self.next_id("user").await?;
        let user = User {
            id,
            username: username.to_owned(),
            name: name.to_owned(),
            is_admin,
            created_at: now(),
        };
        let namespace = Namespace {
            id,
            path: username.to_owned(),
            name: name.to_owned(),
            owner_id: id,
        };
        let lookup = shared::domain::name_key(username);
        let mut by_name = key(keys::username(&lookup), "USER");
        by_name.insert("id".into(), n(id));
        let mut by_path = key(keys::namespace_path(&lookup), "NS");
        by_path.insert("id".into(), n(id));
        let unique = Some("attribute_not_exists(pk)");
        let created = self
            .put_all(vec![
                (by_name, unique),
                (by_path, unique),
                (with_data(key(keys::user(id), "USER"), &user)?, None),
                (with_data(key(keys::namespace(id), "NS"), &namespace)?, None),
            ])
            .await?;
        if !created {
            return Err(Error::Conflict("Username has already been taken".into()));
        }
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.get_data(&keys::user(id), "USER").await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let lookup = shared::domain::name_key(username);
        let mut id = self.indexed_id(&keys::username(&lookup), "USER").await?;
        if id.is_none() && lookup != username {
            // Written before names were keyed in lower case.
            id = self.indexed_id(&keys::username(username), "USER").await?;
        }
        match id {
            Some(id) => self.user(id).await,
            None => Ok(None),
        }
    }

    async fn add_token(
        &self,
        user_id: UserId,
        name: &str,
        token_hash: [u8; 32],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Token> {
        let token = Token {
            id: self.next_id("token").await?,
            user_id,
            name: name.to_owned(),
            created_at: now(),
            expires_at,
            revoked: false,
        };
        let item = with_data(key(keys::token(&hex::encode(token_hash)), "TOKEN"), &token)?;
        let mut by_id = key(keys::token_id(token.id), "TOKEN");
        by_id.insert("hash".into(), s(hex::encode(token_hash)));
        self.put_all(vec![(item, None), (by_id, None)]).await?;
        Ok(token)
    }

    async fn token(&self, id: u64) -> Result<Option<Token>> {
        let Some(by_id) = self.get_item(&keys::token_id(id), "TOKEN").await? else {
            return Ok(None);
        };
        match get_s(&by_id, "hash") {
            Some(hash) => self.get_data(&keys::token(hash), "TOKEN").await,
            None => Ok(None),
        }
    }

    async fn revoke_token(&self, id: u64) -> Result<bool> {
        let Some(by_id) = self.get_item(&keys::token_id(id), "TOKEN").await? else {
            return Ok(false);
        };
        let Some(hash) = get_s(&by_id, "hash").map(str::to_owned) else {
            return Ok(false);
        };
        let Some(mut token) = self.get_data::<Token>(&keys::token(&hash), "TOKEN").await? else {
            return Ok(false);
        };
        token.revoked = true;
        let item = with_data(key(keys::token(&hash), "TOKEN"), &token)?;
        self.put_item(item).await?;
        Ok(true)
    }

    async fn token_by_hash(&self, token_hash: [u8; 32]) -> Result<Option<Token>> {
        self.get_data(&keys::token(&hex::encode(token_hash)), "TOKEN")
            .await
    }

    async fn namespace(&self, id: NamespaceId) -> Result<Option<Namespace>> {
        self.get_data(&keys::namespace(id), "NS").await
    }

    async fn namespace_by_path(&self, path: &str) -> Result<Option<Namespace>> {
        let lookup = shared::domain::name_key(path);
        let mut id = self
            .indexed_id(&keys::namespace_path(&lookup), "NS")
            .await?;
        if id.is_none() && lookup != path {
            id = self.indexed_id(&keys::namespace_path(path), "NS").await?;
        }
        match id {
            Some(id) => self.namespace(id).await,
            None => Ok(None),
        }
    }

    async fn take_rate_slot(
        &self,
        user_id: UserId,
        action: &str,
        window_start: i64,
        limit: u32,
    ) -> Result<bool> {
        let counted = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                keys::rate_window(user_id, action),
                window_start.to_string(),
            )))
            .update_expression("ADD hits :one SET expires_at = :expires")
            .condition_expression("attribute_not_exists(hits) OR hits < :limit")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit.into()))
            .expression_attribute_values(":expires", n(window_start.max(0) as u64 + 3600))
            .send()
            .await;
        match counted {
            Ok(_) => Ok(true),
            Err(err) => match err.into_service_error() {
                e if e.is_conditional_check_failed_exception() => Ok(false),
                e => Err(ddb_error(e)),
            },
        }
    }
}
