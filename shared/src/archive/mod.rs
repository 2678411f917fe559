//! GitLab's project export archive: a `.tar.gz` with `VERSION`,
//! `tree/project.json`, one `tree/project/<relation>.ndjson` per relation and
//! opaque blobs. Older exports hold everything in one `project.json`; both are
//! read. Reading and writing run on blocking threads over bounded channels.

mod events;
mod inflate;
mod json;
mod legacy;
mod parallel_gzip;
pub mod raw_json;
mod reader;
mod slices;
mod writer;

pub use events::{ImportEvent, SinkClosed};
pub use inflate::{AccessPoint, Inflater};
pub use json::check_record;
pub use parallel_gzip::{one_encoder_takes_every_core, ParallelGzEncoder};
pub use reader::{read_archive, read_files, read_relation, ReadControl, ReadEnd, ReaderCheckpoint};
pub use slices::{trailer, Slice, SliceSum};
pub use writer::{header_bytes, padding, write_archive, ExportItem, END_OF_ARCHIVE};

/// The archive format version we write and the versions we read.
pub const VERSION: &str = "0.2.4";
pub const GITLAB_VERSION: &str = "17.5.0";
pub const GITLAB_REVISION: &str = concat!("serverless-", env!("CARGO_PKG_VERSION"));

pub const PROJECT_JSON: &str = "tree/project.json";
pub const LEGACY_PROJECT_JSON: &str = "project.json";
pub const RELATION_DIR: &str = "tree/project/";

/// The parts a blob of an archive is stored in when it is too big for one
/// run to copy: an import may stop inside such a blob only where a part
/// ends, and goes on with the next part. 8 MiB (S3's parts are at least
/// 5 MiB), more for a blob that would need more than S3's 10,000 parts.
pub fn blob_part_bytes(size: u64) -> Option<u64> {
    const PART: u64 = 8 * 1024 * 1024;
    const MIB: u64 = 1024 * 1024;
    (size > 2 * PART).then(|| {
        let parts = u64::from(crate::ports::MAX_PART_NUMBER);
        PART.max(size.div_ceil(parts).div_ceil(MIB) * MIB)
    })
}

pub fn relation_file(relation: &str) -> String {
    format!("{RELATION_DIR}{relation}.ndjson")
}

pub fn is_supported_version(version: &str) -> bool {
    // GitLab's 0.2.x NDJSON and legacy JSON exports share one layout family.
    version
        .strip_prefix("0.2.")
        .is_some_and(|patch| !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()))
}

/// What a stranger's archive may cost us. Every limit is configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes after decompression, all entries together (stops gzip bombs).
    pub max_uncompressed_bytes: u64,
    pub max_entries: u64,
    /// One NDJSON record (one line), and one record of a legacy `project.json`.
    pub max_record_bytes: usize,
    /// `tree/project.json`, held in memory while importing.
    pub max_attributes_bytes: usize,
    /// Nesting of objects and arrays in one record.
    pub max_json_depth: usize,
    /// Relation files (`tree/project/*.ndjson`): each becomes a part of
    /// every relations export, a queue message each.
    pub max_relations: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed_bytes: 20 * 1024 * 1024 * 1024,
            max_entries: 1_000_000,
            max_record_bytes: 32 * 1024 * 1024,
            max_attributes_bytes: 8 * 1024 * 1024,
            max_json_depth: 64,
            max_relations: 1_000,
        }
    }
}

/// Why an archive was refused. The message becomes the import's `import_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("the file is not a gzip archive")]
    NotGzip,
    #[error("the archive is corrupt or truncated: {0}")]
    Corrupt(String),
    #[error("the archive expands to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the archive has more than {limit} relation files")]
    TooManyRelations { limit: usize },
    #[error("unsafe path in archive: {0:?}")]
    UnsafePath(String),
    #[error("unsupported entry {path:?} in archive: {kind} (only regular files and directories are allowed)")]
    UnsupportedEntry { path: String, kind: String },
    #[error("duplicate entry in archive: {0:?}")]
    DuplicateEntry(String),
    #[error("the archive holds both a file and a directory named {0:?}")]
    PathConflict(String),
    #[error("the archive has no VERSION file")]
    MissingVersion,
    #[error("unsupported export version {0:?} (supported: 0.2.x)")]
    UnsupportedVersion(String),
    #[error("the archive has neither tree/project.json nor project.json")]
    MissingProject,
    #[error("invalid relation name {0:?}")]
    InvalidRelation(String),
    #[error("{file}: line {line}: {reason}")]
    InvalidRecord {
        file: String,
        line: u64,
        reason: String,
    },
    #[error("the import was stopped")]
    Aborted,
    #[error("an extension header of {size} bytes in the archive (the limit is {limit})")]
    ExtensionTooLarge { size: u64, limit: u64 },
}
