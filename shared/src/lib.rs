//! Everything the functions and the local server share: the domain, the storage
//! ports with their adapters, the GitLab archive format, the services and the
//! HTTP routes.

pub mod app;
pub mod archive;
pub mod auth;
pub mod crash;
pub mod domain;
pub mod embedded;
pub mod error;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod ports;
pub mod redact;
pub mod relations;
pub mod remote;
pub mod runtime;
pub mod service;
pub mod signing;
pub mod stream;
pub mod uri;
pub mod worker;

pub use app::{App, Settings};
pub use error::{Error, Result};
