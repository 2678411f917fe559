//! What reading an archive emits, in archive order, to a sink that may stop
//! listening: shared by the tar reader and the legacy `project.json` reader.

use std::sync::Arc;

use bytes::Bytes;

use super::ArchiveError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportEvent {
    /// The project attributes (`tree/project.json`), a JSON object.
    Attributes(Bytes),
    /// One top-level record of a relation, in archive order.
    Record {
        relation: Arc<str>,
        json: Bytes,
    },
    /// An opaque file (repository bundle, upload, ...) follows in chunks:
    /// `size` bytes in all, from its byte `from` on (0 unless a read that
    /// stopped inside it goes on there).
    BlobStart {
        path: String,
        size: u64,
        from: u64,
    },
    BlobChunk(Bytes),
    BlobEnd,
}

/// The consumer stopped listening; reading stops too.
#[derive(Debug)]
pub struct SinkClosed;

pub(super) type Sink<'a> = dyn FnMut(ImportEvent) -> Result<(), SinkClosed> + 'a;

pub(super) fn invalid(file: &str, line: u64, reason: String) -> ArchiveError {
    ArchiveError::InvalidRecord {
        file: file.to_owned(),
        line,
        reason,
    }
}
