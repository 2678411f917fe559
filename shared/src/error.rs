//! The one error type of the services. `http::error` maps it to a status code;
//! nothing else decides HTTP statuses.

use crate::archive::ArchiveError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("401 Unauthorized")]
    Unauthorized,
    #[error("403 Forbidden")]
    Forbidden,
    /// The whole GitLab message, e.g. `404 Project Not Found`.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A parameter Grape's validation refuses (missing, invalid, not one of
    /// the values, all or none): GitLab answers `400 {"error": …}`.
    #[error("{0}")]
    InvalidParameter(String),
    /// A route Grape does not know (`404`) or a method it does not serve
    /// there (`405`): GitLab answers `{"error": "404 Not Found"}`.
    #[error("{1}")]
    NoRoute(u16, &'static str),
    /// Something that exists already (a username, a job id).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request GitLab's service refuses after its parameters passed
    /// (`render_api_error!(…, 422)`).
    #[error("{0}")]
    Unprocessable(String),
    /// A client sent its request body too slowly (below the server's
    /// minimum rate) and was cut off.
    #[error("408 Request Timeout")]
    RequestTimeout,
    /// GitLab's rate limit answer; `retry_after` in seconds.
    #[error("This endpoint has been requested too many times. Try again later.")]
    TooManyRequests { retry_after: u64 },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The disk (or the store's reserve of it) is full: the work that hit
    /// it fails rather than filling it again on every retry.
    #[error("507 Insufficient Storage: {0}")]
    InsufficientStorage(String),
    /// A backend (database, blob store, queue) failed; worth a retry.
    #[error("storage error: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A write into a content generation by a writer that no longer owns it.
    pub fn not_the_writer(generation: &str, writer: u32) -> Self {
        Error::Conflict(format!(
            "writer {writer} no longer owns content generation {generation}"
        ))
    }

    pub fn storage(err: impl std::fmt::Display) -> Self {
        Error::Storage(err.to_string())
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        Error::Internal(err.to_string())
    }

    /// `what` is GitLab's resource word: "Project", "Namespace", "File", ...
    pub fn not_found(what: &str) -> Self {
        Error::NotFound(format!("404 {what} Not Found"))
    }

    pub fn project_not_found() -> Self {
        Error::not_found("Project")
    }

    /// Errors that say something about the input, not the machine: retrying
    /// the same work cannot succeed.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Error::Storage(_) | Error::Internal(_))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        if is_disk_full(&err) {
            return Error::InsufficientStorage(format!("the disk is full ({err})"));
        }
        Error::Storage(err.to_string())
    }
}

/// ENOSPC and EDQUOT, whatever wraps them.
pub fn is_disk_full(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    ) || err.get_ref().is_some_and(|inner| {
        inner
            .downcast_ref::<std::io::Error>()
            .is_some_and(is_disk_full)
            || inner.to_string().contains("No space left on device")
    })
}
