//! The embedded default: everything in one data directory, no AWS. Jobs,
//! users, projects, records and the queue live in one redb database (durable,
//! crash-safe); blobs are files written atomically.

mod blobs;
mod chunks;
mod content;
mod queue;
mod stores;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};

pub use blobs::DirBlobStore;
pub use queue::EmbeddedQueue;
pub use stores::EmbeddedStore;

use crate::signing::Signer;
use crate::{App, Error, Result, Settings};

/// A shared handle on the database. Every operation runs on a blocking thread.
///
/// After an I/O error (a full disk, most often) redb refuses every later
/// transaction until the database is opened again; the handle does that by
/// itself, so one failed write never leaves the server answering 500 until
/// a restart. What the failed transaction wrote is lost; what was committed
/// before stays.
#[derive(Clone)]
pub(crate) struct Db(Arc<DbShared>);

struct DbShared {
    path: PathBuf,
    /// `None` while it is being opened again.
    current: std::sync::RwLock<Option<Arc<Database>>>,
}

/// redb's page cache and write buffer. Its default (1 GiB) lets the process
/// grow with the project; records are streamed in 64 KiB chunks, so a small
/// cache is enough to read with. A store batch (1 MiB) that overflows the
/// write buffer (half the cache) has pages written out, read back and
/// written again: through the page cache, 2.26 GB copied at 1 MiB against
/// 1.29 GB at 4 MiB for a 200,000-issue import, the same 1.22 GB reaching
/// the disk. Six alternating imports found 1 MiB as fast (the copies hit
/// pages the page cache holds), and 4 MiB filled on big imports only: peak
/// RSS +16 % from 10,000 to 200,000 issues, +7 % at 1 MiB. 256 KiB was slower.
const CACHE_BYTES: usize = 1024 * 1024;

fn open_database(path: &Path) -> Result<Database> {
    try_open(path).map_err(|err| open_error(path, err))
}

fn try_open(path: &Path) -> std::result::Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

fn open_error(path: &Path, err: redb::DatabaseError) -> Error {
    Error::Storage(format!(
        "cannot open {} (is another server using this data directory?): {err}",
        path.display()
    ))
}

/// How long an operation waits to open the database again after a failure
/// closed it: operations still under way hold the failed handle, and redb
/// locks its file until the last of them lets go.
const REOPEN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives the space of deleted data back to the file system: the database
/// file keeps freed pages for reuse, so a deleted project's records make it
/// no smaller until it is compacted. Run while no server uses the data
/// directory. Returns the file's size before and after, in bytes.
pub fn compact(data_dir: &Path) -> Result<(u64, u64)> {
    let path = data_dir.join("state.redb");
    let size = || std::fs::metadata(&path).map(|m| m.len());
    if !path.exists() {
        return Err(Error::NotFound(format!(
            "no database in {}",
            data_dir.display()
        )));
    }
    let before = size()?;
    let mut db = open_database(&path)?;
    while db.compact()? {}
    drop(db);
    Ok((before, size()?))
}

// redb's errors are storage errors, worth a retry; their text is kept, since
// `needs_reopen` and `classify` read it (an I/O error, a full disk).
macro_rules! storage_errors {
    ($($redb:ty),* $(,)?) => {$(
        impl From<$redb> for Error {
            fn from(err: $redb) -> Self {
                Error::Storage(err.to_string())
            }
        }
    )*};
}

storage_errors!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::DatabaseError,
    redb::TransactionError,
    redb::CommitError,
    redb::CompactionError,
    redb::SetDurabilityError,
);

/// Errors after which redb wants the database opened again.
fn needs_reopen(err: &Error) -> bool {
    matches!(err, Error::Storage(text) if text.contains("I/O error"))
        || matches!(err, Error::InsufficientStorage(_))
}

/// A storage error that is really a full disk.
fn classify(err: Error) -> Error {
    match err {
        Error::Storage(text)
            if text.contains("No space left on device") || text.contains("os error 28") =>
        {
            Error::InsufficientStorage(format!("the disk is full ({text})"))
        }
        other => other,
    }
}

impl Db {
    fn open(path: &Path) -> Result<Self> {
        let db = Db(Arc::new(DbShared {
            path: path.to_owned(),
            current: std::sync::RwLock::new(Some(Arc::new(open_database(path)?))),
        }));
        db.write_now(|txn| {
            stores::create_tables(txn)?;
            content::create_tables(txn)?;
            queue::create_tables(txn)
        })?;
        Ok(db)
    }

    /// The open database, opening it again if a failure closed it. While
    /// the failed handle is still held, the open is tried again: once that
    /// answered "already open" at once, and a queue message whose settling
    /// met it stayed in flight (a full disk's import stuck as started).
    /// The lock is let go between tries, so that the operations holding the
    /// failed handle can hand it back.
    fn database(&self) -> Result<Arc<Database>> {
        let deadline = std::time::Instant::now() + REOPEN_PATIENCE;
        loop {
            let current = self.0.current.read().unwrap_or_else(|e| e.into_inner());
            if let Some(db) = current.as_ref() {
                return Ok(db.clone());
            }
            drop(current);
            let mut current = self.0.current.write().unwrap_or_else(|e| e.into_inner());
            if let Some(db) = current.as_ref() {
                return Ok(db.clone());
            }
            match try_open(&self.0.path) {
                Ok(db) => {
                    let db = Arc::new(db);
                    *current = Some(db.clone());
                    tracing::info!(path = %self.0.path.display(), "state database opened again");
                    return Ok(db);
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    drop(current);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(err) => return Err(open_error(&self.0.path, err)),
            }
        }
    }

    /// Closes the database that failed (once every operation still using
    /// it let go), so that the next operation opens it again.
    fn reopen_after(&self, failed: Arc<Database>) {
        let mut current = self.0.current.write().unwrap_or_else(|e| e.into_inner());
        if !current.as_ref().is_some_and(|db| Arc::ptr_eq(db, &failed)) {
            return; // another thread did it already
        }
        let held = current.take();
        drop(current);
        drop(held);
        // redb locks its file: the old handle must be gone before a new one.
        let deadline = std::time::Instant::now() + REOPEN_PATIENCE;
        while Arc::strong_count(&failed) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(failed);
        tracing::warn!(path = %self.0.path.display(), "state database closed after an I/O error");
    }

    fn settle<T>(&self, db: Arc<Database>, out: Result<T>) -> Result<T> {
        match out {
            Ok(value) => Ok(value),
            Err(err) => {
                let err = classify(err);
                if needs_reopen(&err) {
                    tracing::error!(error = %err, "state database I/O error");
                    self.reopen_after(db);
                }
                Err(err)
            }
        }
    }

    fn write_now<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        self.write_with(Durability::Immediate, f)
    }

    fn write_with<T>(
        &self,
        durability: Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        let db = self.database()?;
        let out = (|| {
            let mut txn = db.begin_write()?;
            txn.set_durability(durability)?;
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        })();
        self.settle(db, out)
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_now(f))
            .await
            .map_err(Error::internal)?
    }

    /// A write that reaches the disk with the next durable one rather than
    /// at once (no fsync of its own). Only for data nothing points at yet:
    /// a crash before the next durable commit loses it, and the work that
    /// wrote it starts over.
    async fn write_deferred<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_with(Durability::None, f))
            .await
            .map_err(Error::internal)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let handle = self.clone();
        tokio::task::spawn_blocking(move || {
            let db = handle.database()?;
            let out = db
                .begin_read()
                .map_err(Error::storage)
                .and_then(|txn| f(&txn));
            handle.settle(db, out)
        })
        .await
        .map_err(Error::internal)?
    }
}

/// The embedded adapters, opened on one data directory.
pub struct EmbeddedBackend {
    pub store: Arc<EmbeddedStore>,
    pub blobs: Arc<DirBlobStore>,
    pub queue: Arc<EmbeddedQueue>,
    pub signer: Signer,
    pub data_dir: PathBuf,
}

impl EmbeddedBackend {
    /// Opens (or creates) the data directory. `public_url` is where the
    /// server that serves signed blob URLs is reachable.
    pub fn open(data_dir: &Path, public_url: &str) -> Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let db = Db::open(&data_dir.join("state.redb"))?;
        let signer = Signer::new(load_or_create_key(&data_dir.join("signing.key"))?);
        let blobs = DirBlobStore::open(&data_dir.join("blobs"), public_url, signer.clone())?;
        Ok(EmbeddedBackend {
            store: Arc::new(EmbeddedStore::new(db.clone())),
            blobs: Arc::new(blobs),
            queue: Arc::new(EmbeddedQueue::open(db)?),
            signer,
            data_dir: data_dir.to_owned(),
        })
    }
}

fn load_or_create_key(path: &Path) -> Result<[u8; 32]> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Ok(bytes) = hex::decode(text.trim()) {
            if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
                return Ok(key);
            }
        }
    }
    let secret = crate::signing::random_secret(32);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &secret)?;
    std::fs::rename(&tmp, path)?;
    let bytes = hex::decode(secret).map_err(Error::internal)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(Error::internal)
}

impl App {
    /// An application on the embedded backend: every port in one data
    /// directory.
    pub fn embedded(backend: &EmbeddedBackend, settings: Settings) -> Self {
        App {
            users: backend.store.clone(),
            projects: backend.store.clone(),
            content: backend.store.clone(),
            jobs: backend.store.clone(),
            blobs: backend.blobs.clone(),
            queue: backend.queue.clone(),
            signer: Some(backend.signer.clone()),
            settings: Arc::new(settings),
            metrics: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure closed the database while an operation still holds the
    /// failed handle: the next operation waits for it to be let go and
    /// opens the database again, rather than failing with "already open".
    #[test]
    fn reopening_waits_for_the_failed_handle_to_be_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.redb")).unwrap();
        let held = db.database().unwrap();
        *db.0.current.write().unwrap() = None;
        let holder = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(held);
        });
        let reopened = db.database();
        holder.join().unwrap();
        assert!(reopened.is_ok(), "{:?}", reopened.err());
        db.write_now(stores::create_tables).unwrap();
    }
}
