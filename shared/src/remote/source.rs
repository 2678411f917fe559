//! The source instance of a migration by direct transfer: GitLab, or this
//! service, reached through its REST API with the user's token. Every
//! request goes through the same guard as remote imports; the token travels
//! only as an `Authorization` header (which a redirect to another host
//! drops), never in a URL, a log line or an error.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::bounded::{self, RemoteLimits};
use super::guard::{blocked_cause, client};
use crate::stream::ByteStream;
use crate::{redact, Error, Result};

/// GitLab's texts for what the source answered (`BulkImports::Error`).
const TOKEN_REFUSED: &str = "Check that the source instance base URL and the personal access token meet the necessary requirements.";
const NOT_AN_INSTANCE: &str =
    "Invalid source URL. Enter only the base URL of the source GitLab instance.";
const EXPORT_DISABLED: &str = "Migration by direct transfer is disabled on the source or destination instance. Ask an administrator to enable this feature on both instances and try again.";

/// Tries of one request whose failure is worth a retry (network, 429, 5xx),
/// before the job's own retry takes over.
const TRIES: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

pub struct SourceInstance {
    /// The instance's `/api/v4/`.
    api: reqwest::Url,
    token: String,
    client: reqwest::Client,
    limits: RemoteLimits,
}

/// One relation of the source's relations export status.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SourceRelation {
    pub relation: String,
    /// 0 started, 1 finished, -1 failed.
    pub status: i64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub batched: bool,
    #[serde(default)]
    pub batches_count: u32,
    #[serde(default)]
    pub total_objects_count: u64,
    #[serde(default)]
    pub batches: Vec<SourceBatch>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SourceBatch {
    pub batch_number: u32,
    pub status: i64,
    #[serde(default)]
    pub error: Option<String>,
}

/// How a request to the source went wrong.
enum Failure {
    /// An answer: its status and the start of its body.
    Status(reqwest::StatusCode, String),
    /// No answer: refused by the guard (permanent) or the network (not).
    Blocked(String),
    Network(String),
}

impl SourceInstance {
    /// `url` is the instance's base URL (a relative root is kept).
    pub fn new(url: &str, token: &str, allow_local: bool, limits: RemoteLimits) -> Result<Self> {
        let base = super::check_url(url, "configuration[url]", allow_local)?;
        let mut api = base.clone();
        let path = format!("{}/api/v4/", base.path().trim_end_matches('/'));
        api.set_path(&path);
        api.set_query(None);
        Ok(SourceInstance {
            api,
            token: token.trim().to_owned(),
            client: client(allow_local)?,
            limits,
        })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url> {
        self.api.join(path).map_err(Error::internal)
    }

    /// Sends the request `build` makes, again after a failure worth a retry.
    /// What an unsuccessful answer says is kept without the token, whatever
    /// the source echoes.
    async fn send(
        &self,
        path: &str,
        build: impl Fn(&reqwest::Client, reqwest::Url) -> reqwest::RequestBuilder,
    ) -> std::result::Result<reqwest::Response, Failure> {
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            let url = self
                .url(path)
                .map_err(|e| Failure::Network(e.to_string()))?;
            let request = build(&self.client, url).bearer_auth(&self.token);
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let body =
                        crate::redact::secret(&bounded::excerpt(response).await, &self.token);
                    Failure::Status(status, body.chars().take(200).collect())
                }
                Err(err) => match blocked_cause(&err) {
                    Some(blocked) => return Err(Failure::Blocked(blocked.0.clone())),
                    None => Failure::Network(crate::redact::secret(
                        &super::error_chain(&err.without_url()),
                        &self.token,
                    )),
                },
            };
            let retry = match &failure {
                Failure::Status(status, _) => {
                    status.is_server_error() || *status == reqwest::StatusCode::TOO_MANY_REQUESTS
                }
                Failure::Network(_) => true,
                Failure::Blocked(_) => false,
            };
            if !retry || tries >= TRIES {
                return Err(failure);
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// The error a failure is, GitLab's wording where it has one; what a
    /// retry may fix stays transient.
    fn error(path: &str, failure: Failure, known: impl Fn(u16) -> Option<String>) -> Error {
        match failure {
            Failure::Blocked(reason) => Error::BadRequest(format!("URL is blocked: {reason}")),
            Failure::Network(detail) => Error::Storage(format!(
                "the source instance did not answer: {}",
                redact::text(&detail)
            )),
            Failure::Status(status, body) => {
                if let Some(text) = known(status.as_u16()) {
                    return Error::BadRequest(text);
                }
                let text = format!(
                    "Unsuccessful response {} from {path}. Body: {}",
                    status.as_u16(),
                    redact::text(&body)
                );
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Error::Storage(text)
                } else {
                    Error::BadRequest(text)
                }
            }
        }
    }

    /// The token is good on this instance (GitLab checks `/version` and the
    /// token's scopes; `/user` answers both questions on either server).
    pub async fn check_token(&self) -> Result<()> {
        let path = "user";
        self.send(path, |c, url| {
            c.get(url).timeout(self.limits.metadata_deadline)
        })
        .await
        .map_err(|failure| {
            Self::error(path, failure, |code| match code {
                401 | 403 => Some(TOKEN_REFUSED.into()),
                404 => Some(NOT_AN_INSTANCE.into()),
                _ => None,
            })
        })?;
        Ok(())
    }

    /// The source project's id, by its full path.
    pub async fn project_id(&self, full_path: &str) -> Result<u64> {
        let path = format!("projects/{}", crate::uri::encode_component(full_path));
        let not_found = || format!("Import failed. '{full_path}' not found.");
        let response = self
            .send(&path, |c, url| {
                c.get(url).timeout(self.limits.metadata_deadline)
            })
            .await
            .map_err(|failure| Self::error(&path, failure, |code| (code == 404).then(not_found)))?;
        #[derive(Deserialize)]
        struct Found {
            id: u64,
        }
        let found: Found = bounded::json(response, "the source's project")
            .await
            .map_err(|err| match err {
                Error::BadRequest(_) => Error::BadRequest(not_found()),
                other => other,
            })?;
        Ok(found.id)
    }

    /// One page (from 1, 100 members) of the source project's members,
    /// inherited ones included, as its members API answers: GitLab's
    /// `Member` entities, and whether a page follows (`X-Next-Page`).
    pub async fn members(&self, project_id: u64, page: u32) -> Result<(Vec<Value>, bool)> {
        let path = format!("projects/{project_id}/members/all");
        let response = self
            .send(&path, |c, url| {
                c.get(url)
                    .query(&[("per_page", "100"), ("page", &page.to_string())])
                    .timeout(self.limits.metadata_deadline)
            })
            .await
            .map_err(|failure| Self::error(&path, failure, |_| None))?;
        let next = response
            .headers()
            .get("x-next-page")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty());
        let members: Vec<Value> = bounded::json(response, "the source's members").await?;
        Ok((members, next))
    }

    /// Whether the source project has anything at `path` (a list such as
    /// `wikis`), as GitLab's destination asks before it clones a wiki:
    /// a `403` or `404` (this server has no such list) is nothing.
    pub async fn lists_any(&self, project_id: u64, list: &str) -> Result<bool> {
        let path = format!("projects/{project_id}/{list}");
        let response = match self
            .send(&path, |c, url| {
                c.get(url)
                    .query(&[("per_page", "1")])
                    .timeout(self.limits.metadata_deadline)
            })
            .await
        {
            Ok(response) => response,
            Err(Failure::Status(status, _)) if status.is_client_error() => return Ok(false),
            Err(failure) => return Err(Self::error(&path, failure, |_| None)),
        };
        let listed: Value = bounded::json(response, "the source's list").await?;
        Ok(listed.as_array().is_some_and(|items| !items.is_empty()))
    }

    /// Asks the source for a new relations export, batched.
    pub async fn start_relations_export(&self, project_id: u64, full_path: &str) -> Result<()> {
        let path = format!("projects/{project_id}/export_relations");
        self.send(&path, |c, url| {
            c.post(url)
                .form(&[("batched", "true")])
                .timeout(self.limits.metadata_deadline)
        })
        .await
        .map_err(|failure| {
            Self::error(&path, failure, |code| match code {
                403 => Some(format!(
                    "Import failed. You do not have permission to export '{full_path}'."
                )),
                404 => Some(EXPORT_DISABLED.into()),
                _ => None,
            })
        })?;
        Ok(())
    }

    /// Every relation of the source's latest relations export.
    pub async fn relations_export_status(&self, project_id: u64) -> Result<Vec<SourceRelation>> {
        let path = format!("projects/{project_id}/export_relations/status");
        let response = self
            .send(&path, |c, url| {
                c.get(url).timeout(self.limits.metadata_deadline)
            })
            .await
            .map_err(|failure| Self::error(&path, failure, |_| None))?;
        let mut status: Vec<SourceRelation> =
            bounded::json(response, "the source's export status").await?;
        // Whatever the source writes here may end up in failures and logs.
        let hide = |text: &mut String| *text = crate::redact::secret(text, &self.token);
        for relation in &mut status {
            hide(&mut relation.relation);
            relation.error.iter_mut().for_each(hide);
            for batch in &mut relation.batches {
                batch.error.iter_mut().for_each(hide);
            }
        }
        Ok(status)
    }

    /// One relation's file, or one batch of it, as the source serves it
    /// (following its redirect to a presigned URL), from byte `from` on: at
    /// most `limit` bytes in all, at the pace of a file. A source that
    /// ignores the range has the bytes before `from` read and dropped.
    pub async fn download(
        &self,
        project_id: u64,
        relation: &str,
        batch: Option<u32>,
        limit: u64,
        from: u64,
    ) -> Result<SourceFile> {
        let path = format!("projects/{project_id}/export_relations/download");
        let mut query = vec![("relation", relation.to_owned())];
        if let Some(batch) = batch {
            query.push(("batched", "true".into()));
            query.push(("batch_number", batch.to_string()));
        }
        let response = self
            .send(&path, |c, url| {
                let request = c.get(url).query(&query);
                if from > 0 {
                    request.header(reqwest::header::RANGE, format!("bytes={from}-"))
                } else {
                    request
                }
            })
            .await
            .map_err(|failure| {
                Self::error(&path, failure, |code| {
                    (code != 429 && code < 500).then(|| format!("File download error {code}"))
                })
            })?;
        let ranged = from > 0 && response.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let size = if ranged {
            let content_range = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            match content_range_of(content_range) {
                Some((start, size)) if start == from => size,
                _ => {
                    return Err(Error::Storage(format!(
                    "the source answered a range of {relation}'s file not starting at byte {from}"
                )))
                }
            }
        } else {
            response.content_length()
        };
        let too_large = format!("a file of the source is larger than {limit} bytes");
        let body = bounded::paced(
            response.bytes_stream(),
            if ranged {
                limit.saturating_sub(from)
            } else {
                limit
            },
            self.limits.file_pace,
            too_large,
        );
        let body = if from > 0 && !ranged {
            tracing::warn!(
                relation,
                from,
                "the source ignores ranges: the file is read again up to where the last run stopped"
            );
            crate::stream::skip(body, from)
        } else {
            body
        };
        Ok(SourceFile { body, size, ranged })
    }
}

/// A file of the source, as it comes.
pub struct SourceFile {
    /// From the byte asked for on.
    pub body: ByteStream,
    /// The whole file's size, where the source said it.
    pub size: Option<u64>,
    /// Whether the source sent only the range asked for (else it sent the
    /// whole file, and the bytes before the range were dropped).
    pub ranged: bool,
}

/// The first byte and the whole size a `Content-Range: bytes a-b/size`
/// names (the size `None` when it is `*`).
fn content_range_of(value: &str) -> Option<(u64, Option<u64>)> {
    let (range, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.parse().ok()?, size.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_range_names_its_start_and_size() {
        assert_eq!(
            content_range_of("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(content_range_of("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range_of("bytes */1000"), None);
        assert_eq!(content_range_of("items 1-2/3"), None);
    }

    #[test]
    fn the_api_is_under_the_base_url() {
        let source = SourceInstance::new(
            "https://gitlab.example.com/root/",
            "t",
            false,
            RemoteLimits::default(),
        )
        .unwrap();
        assert_eq!(
            source.url("user").unwrap().as_str(),
            "https://gitlab.example.com/root/api/v4/user"
        );
        let source = SourceInstance::new(
            "https://gitlab.example.com",
            "t",
            false,
            RemoteLimits::default(),
        )
        .unwrap();
        assert_eq!(
            source.url("projects/a%2Fb").unwrap().as_str(),
            "https://gitlab.example.com/api/v4/projects/a%2Fb"
        );
        assert!(
            SourceInstance::new("http://127.0.0.1:1", "t", false, RemoteLimits::default()).is_err()
        );
    }
}
