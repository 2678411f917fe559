//! Request parts every handler needs: the caller, the parameters (GitLab
//! takes them from the query, a form, multipart or JSON alike) and the base
//! URL the client used.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Multipart, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::request::Parts;
use serde_json::Value;

use crate::domain::{Project, Token, User};
use crate::service::{self, ProjectRef};
use crate::{auth, App, Error};

/// The authenticated user; rejects with 401.
pub struct Caller(pub User);

/// The caller and the token they authenticated with.
pub struct CallerToken(pub User, pub Token);

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

impl FromRequestParts<App> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Error> {
        let CallerToken(user, _) = CallerToken::from_request_parts(parts, app).await?;
        Ok(Caller(user))
    }
}

impl FromRequestParts<App> for CallerToken {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Error> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = header(AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer ").map(str::trim).map(str::to_owned));
        let token = header("private-token")
            .map(str::to_owned)
            .or(bearer)
            .or_else(|| {
                query_pairs(parts.uri.query())
                    .into_iter()
                    .find(|(k, _)| k == "private_token")
                    .map(|(_, v)| v)
            });
        let (user, token) = auth::authenticate_token(app, token.as_deref()).await?;
        Ok(CallerToken(user, token))
    }
}

/// The project named by the route's `:id` (a number or a URL-encoded path),
/// if the authenticated caller may manage it: 401 without a valid token,
/// 404 for someone else's project as for a missing one.
pub struct CallerProject {
    pub user: User,
    pub project: Project,
}

impl FromRequestParts<App> for CallerProject {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Error> {
        let Caller(user) = Caller::from_request_parts(parts, app).await?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, app)
            .await
            .map_err(|_| Error::project_not_found())?;
        let id = params.get("id").ok_or_else(Error::project_not_found)?;
        let project = service::find_project(app, &user, &ProjectRef::parse(id)).await?;
        Ok(CallerProject { user, project })
    }
}

/// `scheme://host` as the client addressed us.
pub struct BaseUrl(pub String);

impl FromRequestParts<App> for BaseUrl {
    type Rejection = Error;

    /// `X-Forwarded-*` only from a proxy the operator put in front (API
    /// Gateway on AWS, `--trust-forwarded-headers` locally): from anyone
    /// else they would let a client choose the links others are shown.
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Error> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let trusted = |name: &str| header(name).filter(|_| app.settings.trust_forwarded_headers);
        let host = trusted("x-forwarded-host")
            .or(header(HOST.as_str()))
            .or(parts.uri.authority().map(|a| a.as_str()))
            .filter(|host| is_host(host))
            .unwrap_or("localhost");
        let scheme = match trusted("x-forwarded-proto") {
            Some("https") => "https",
            _ => "http",
        };
        Ok(BaseUrl(format!("{scheme}://{host}")))
    }
}

/// A host name or address with an optional port: nothing that could end
/// the URL early or smuggle a path into it.
fn is_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Request parameters from the query string and the body, whatever its form.
#[derive(Default)]
pub struct Params {
    values: HashMap<String, String>,
    /// Names a JSON body gave an array or an object: Grape refuses them
    /// wherever it declares a scalar.
    structured: HashSet<String>,
}

impl Params {
    /// Parameters that are all text (a multipart form's fields).
    pub fn from_texts(values: HashMap<String, String>) -> Self {
        Params {
            values,
            structured: HashSet::new(),
        }
    }

    /// A scalar parameter's text; an array or a hash in its place is
    /// invalid, as Grape's coercion of a declared scalar answers it.
    pub fn get(&self, name: &str) -> Result<Option<&str>, Error> {
        if self.structured.contains(name) {
            return Err(Error::InvalidParameter(format!("{name} is invalid")));
        }
        Ok(self.values.get(name).map(String::as_str))
    }

    /// Every parameter: its text, or `None` where a JSON body gave an
    /// array or a hash.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let texts = self
            .values
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())));
        texts.chain(self.structured.iter().map(|k| (k.as_str(), None)))
    }

    /// The scalar parameters, as the query string of a link would carry them.
    pub fn texts(&self) -> &HashMap<String, String> {
        &self.values
    }

    /// A boolean parameter as Grape reads one; absent is false.
    pub fn flag(&self, name: &str) -> Result<bool, Error> {
        let value = self.get(name)?.map(str::to_ascii_lowercase);
        match value.as_deref() {
            None | Some("") => Ok(false),
            Some("true" | "1" | "yes" | "t") => Ok(true),
            Some("false" | "0" | "no" | "f") => Ok(false),
            Some(_) => Err(Error::InvalidParameter(format!("{name} is invalid"))),
        }
    }

    /// A positive integer parameter, `default` when absent.
    pub fn number(&self, name: &str, default: usize) -> Result<usize, Error> {
        match self.get(name)?.filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| Error::InvalidParameter(format!("{name} is invalid"))),
        }
    }

    /// Adds a JSON parameter as the form field(s) Grape would see: nested
    /// objects become `name[key]`; an array or a hash is remembered as one.
    fn add_json(&mut self, name: String, value: Value) {
        match value {
            Value::String(text) => {
                self.values.insert(name, text);
            }
            Value::Null => {}
            Value::Object(object) => {
                for (key, value) in object {
                    self.add_json(format!("{name}[{key}]"), value);
                }
                self.values.remove(&name);
                self.structured.insert(name);
            }
            Value::Array(_) => {
                self.values.remove(&name);
                self.structured.insert(name);
            }
            other => {
                self.values.insert(name, other.to_string());
            }
        }
    }

    fn len(&self) -> usize {
        self.values.len() + self.structured.len()
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        let mut params = Params::from_texts(query_pairs(req.uri().query()).into_iter().collect());
        let content_type = content_type(&req);
        if content_type.starts_with("multipart/form-data") {
            let mut multipart = Multipart::from_request(req, state)
                .await
                .map_err(|_| bad_body("multipart"))?;
            let mut budget = FieldBudget::default();
            let read = async {
                while let Some(field) = multipart
                    .next_field()
                    .await
                    .map_err(|_| bad_body("multipart"))?
                {
                    let Some(name) = field.name().map(str::to_owned) else {
                        continue;
                    };
                    let text = field_text(field, &name, &mut budget).await?;
                    params.values.insert(name, text);
                }
                Ok(())
            }
            .await;
            if let Err(err) = read {
                if matches!(err, Error::PayloadTooLarge(_)) {
                    drain_refused(&mut multipart).await;
                }
                return Err(err);
            }
        } else if content_type.starts_with("application/json") {
            let body = small_body(req).await?;
            if !body.is_empty() {
                let value: Value = serde_json::from_slice(&body).map_err(|_| bad_body("JSON"))?;
                // Grape merges a body into the parameters only when it is a
                // hash: `null`, `[]` or `3` mean no parameters there.
                if let Value::Object(object) = value {
                    for (name, value) in object {
                        params.add_json(name, value);
                    }
                }
            }
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            let body = small_body(req).await?;
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&body).map_err(|_| bad_body("form"))?;
            params.values.extend(pairs);
        }
        if params.len() > MAX_FIELDS {
            return Err(too_many_fields());
        }
        Ok(params)
    }
}

/// The request's media type, lower-cased (empty without one).
fn content_type(req: &Request) -> String {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn bad_body(what: &str) -> Error {
    Error::BadRequest(format!("invalid {what} body"))
}

/// The largest JSON or form body of parameters, and the most bytes a
/// multipart form's fields besides its file take together (uploads stream,
/// and are limited on their own).
pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;
/// The largest single form field besides an upload's file.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// The most parameters one request has (GitLab's routes take a few dozen;
/// Rack stops a multipart form at 4,096 parts).
pub const MAX_FIELDS: usize = 1024;

fn too_many_fields() -> Error {
    Error::PayloadTooLarge(format!("the request has more than {MAX_FIELDS} parameters"))
}

fn params_too_large() -> Error {
    Error::PayloadTooLarge(format!(
        "the request's parameters are larger than {MAX_PARAMS_BYTES} bytes"
    ))
}

async fn small_body(req: Request) -> Result<Bytes, Error> {
    axum::body::to_bytes(req.into_body(), MAX_PARAMS_BYTES)
        .await
        .map_err(|_| params_too_large())
}

/// What a multipart form's text fields may still take: counted as they
/// arrive, so a flood is refused before it is held.
pub struct FieldBudget {
    fields: usize,
    bytes: usize,
}

impl Default for FieldBudget {
    fn default() -> Self {
        FieldBudget {
            fields: MAX_FIELDS,
            bytes: MAX_PARAMS_BYTES,
        }
    }
}

impl FieldBudget {
    fn spend(&mut self, bytes: usize) -> Result<(), Error> {
        self.bytes = self.bytes.checked_sub(bytes).ok_or_else(params_too_large)?;
        Ok(())
    }
}

/// Reads on (up to 64 MiB, dropped) after refusing a multipart body as too
/// large, so that the client gets to read the `413` instead of a connection
/// closed under its request.
pub async fn drain_refused(multipart: &mut Multipart) {
    let mut left = 64 * 1024 * 1024usize;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                return;
            }
        }
    }
}

/// A multipart field's text, read only up to its limit and the form's
/// `budget`. Grape answers a field that is not UTF-8 as invalid, not missing.
pub async fn field_text(
    mut field: axum::extract::multipart::Field<'_>,
    name: &str,
    budget: &mut FieldBudget,
) -> Result<String, Error> {
    budget.fields = budget.fields.checked_sub(1).ok_or_else(too_many_fields)?;
    budget.spend(name.len())?;
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|_| Error::BadRequest("invalid multipart body".into()))?
    {
        if bytes.len() + chunk.len() > MAX_FIELD_BYTES {
            return Err(Error::PayloadTooLarge(format!(
                "{name} is larger than {MAX_FIELD_BYTES} bytes"
            )));
        }
        budget.spend(chunk.len())?;
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| Error::InvalidParameter(format!("{name} is invalid")))
}

/// Request parameters with their structure kept (hashes and arrays), for
/// routes whose parameters nest: a JSON body as it is, or a form read as
/// Rack reads one (`configuration[url]=…&entities[][source_type]=…`).
pub struct NestedParams(pub Value);

impl<S: Send + Sync> FromRequest<S> for NestedParams {
    type Rejection = Error;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Error> {
        let mut pairs = query_pairs(req.uri().query());
        let content_type = content_type(&req);
        if content_type.starts_with("application/json") {
            let body = small_body(req).await?;
            let mut value = if body.is_empty() {
                Value::Object(Default::default())
            } else {
                serde_json::from_slice::<Value>(&body).map_err(|_| bad_body("JSON"))?
            };
            if !value.is_object() {
                // As `Params`: a body that is not a hash adds nothing.
                value = Value::Object(Default::default());
            }
            let Some(object) = value.as_object_mut() else {
                return Err(bad_body("JSON"));
            };
            for (name, text) in pairs {
                object.entry(name).or_insert(Value::String(text));
            }
            return Ok(NestedParams(value));
        }
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let body = small_body(req).await?;
            let form: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&body).map_err(|_| bad_body("form"))?;
            pairs.extend(form);
        }
        Ok(NestedParams(rack_nested(&pairs)))
    }
}

/// Form pairs nested as Rack nests them: `a[b]` is a hash member, `a[]` an
/// array element, `a[][b]` starts a new hash in the array when the last one
/// has `b` already; a hash whose keys are all indexes (`a[0][b]`) is an
/// array, as Grape reads it.
pub fn rack_nested(pairs: &[(String, String)]) -> Value {
    let mut root = Value::Object(Default::default());
    for (name, value) in pairs {
        let (head, rest) = name.split_once('[').unwrap_or((name, ""));
        let mut keys = vec![head.to_owned()];
        keys.extend(
            rest.split('[')
                .filter(|_| !rest.is_empty())
                .map(|k| k.trim_end_matches(']').to_owned()),
        );
        insert_nested(&mut root, &keys, value.clone());
    }
    indexed_hashes_as_arrays(root)
}

fn insert_nested(target: &mut Value, keys: &[String], value: String) {
    let Some((key, rest)) = keys.split_first() else {
        *target = Value::String(value);
        return;
    };
    if key.is_empty() {
        if !target.is_array() {
            *target = Value::Array(Vec::new());
        }
        let Value::Array(items) = target else { return };
        match rest.first() {
            None => items.push(Value::String(value)),
            Some(member) => {
                let reuse = items
                    .last()
                    .and_then(Value::as_object)
                    .is_some_and(|last| !last.contains_key(member));
                if !reuse {
                    items.push(Value::Object(Default::default()));
                }
                if let Some(last) = items.last_mut() {
                    insert_nested(last, rest, value);
                }
            }
        }
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(object) = target {
        let slot = object.entry(key.clone()).or_insert(Value::Null);
        insert_nested(slot, rest, value);
    }
}

fn indexed_hashes_as_arrays(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let indexed = !object.is_empty() && object.keys().all(|k| k.parse::<usize>().is_ok());
            let mut members: Vec<(String, Value)> = object
                .into_iter()
                .map(|(k, v)| (k, indexed_hashes_as_arrays(v)))
                .collect();
            if indexed {
                members.sort_by_key(|(k, _)| k.parse::<usize>().unwrap_or(usize::MAX));
                Value::Array(members.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(members.into_iter().collect())
            }
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(indexed_hashes_as_arrays).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        serde_urlencoded::from_str(text).unwrap()
    }

    #[test]
    fn forms_nest_as_rack_nests_them() {
        let form = pairs(
            "configuration[url]=https%3A%2F%2Fx&configuration[access_token]=t\
             &entities[][source_type]=project_entity&entities[][source_full_path]=a/b\
             &entities[][source_type]=project_entity&entities[][source_full_path]=c/d",
        );
        assert_eq!(
            rack_nested(&form),
            serde_json::json!({
                "configuration": {"url": "https://x", "access_token": "t"},
                "entities": [
                    {"source_type": "project_entity", "source_full_path": "a/b"},
                    {"source_type": "project_entity", "source_full_path": "c/d"},
                ],
            })
        );
        let indexed = pairs("entities[1][a]=2&entities[0][a]=1&tags[]=x&tags[]=y");
        assert_eq!(
            rack_nested(&indexed),
            serde_json::json!({"entities": [{"a": "1"}, {"a": "2"}], "tags": ["x", "y"]})
        );
    }
}
