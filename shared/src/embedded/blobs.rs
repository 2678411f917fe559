//! Blobs as files under one directory. A blob is written to a temporary file
//! and renamed into place once complete, so a reader never sees half of one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::uri::{encode_component, encode_path};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::domain::now;
use crate::ports::{BlobInfo, BlobStore, StoredPart, MAX_PART_NUMBER};
use crate::signing::{Action, Signer};
use crate::stream::{BlockingReader, BorrowedStream, ByteStream};
use crate::{Error, Result};

/// How often a blob being written checks the disk's free space.
const FREE_SPACE_CHECK_EVERY: u64 = 1024 * 1024;
/// The free space blobs leave to the state database: 5 % of the disk, at
/// most this much.
const MAX_RESERVE_BYTES: u64 = 256 * 1024 * 1024;

struct Space {
    total: u64,
    available: u64,
}

/// The file system's size and the space an unprivileged writer has left.
fn free_space(path: &Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some(Space {
        total: stat.f_blocks as u64 * block,
        available: stat.f_bavail as u64 * block,
    })
}

/// Blobs written in parts keep them here until completed: a folder per
/// upload, a file per part. They outlive a restart, as S3's do.
const PARTS_DIR: &str = ".parts";
/// An upload neither completed nor aborted this long is dropped at the next
/// start (S3's lifecycle rule drops them after a day).
const ABANDONED_PARTS_AFTER: Duration = Duration::from_secs(24 * 3600);

pub struct DirBlobStore {
    root: PathBuf,
    staging: PathBuf,
    parts: PathBuf,
    public_url: String,
    signer: Signer,
}

impl DirBlobStore {
    pub fn open(root: &Path, public_url: &str, signer: Signer) -> Result<Self> {
        let staging = root.join(".staging");
        // Leftovers of writes a crash interrupted: never visible, safe to drop.
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        let parts = root.join(PARTS_DIR);
        std::fs::create_dir_all(&parts)?;
        drop_abandoned_uploads(&parts);
        Ok(DirBlobStore {
            root: root.to_owned(),
            staging,
            parts,
            public_url: public_url.trim_end_matches('/').to_owned(),
            signer,
        })
    }

    /// Fails once the file system has less than its reserve left: a blob
    /// never takes the last of the disk, so the state database can still
    /// commit the cleanup of whatever was cut short.
    fn check_free_space(&self) -> std::io::Result<()> {
        let Some(space) = free_space(&self.root) else {
            return Ok(());
        };
        let reserve = (space.total / 20).min(MAX_RESERVE_BYTES);
        if space.available < reserve {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{} bytes free on the data directory's disk, below its reserve of {reserve}",
                    space.available
                ),
            ));
        }
        Ok(())
    }

    /// Keys are ours, but are still checked: a key is a relative path of
    /// plain components and never reaches outside the root.
    fn path_of(&self, key: &str) -> Result<PathBuf> {
        // Only the root holds the staging directory: a deeper `.staging`
        // (an upload's own name) is a plain name.
        let plain = !key.is_empty()
            && !key.starts_with(".staging")
            && !key.starts_with(PARTS_DIR)
            && key
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && !key.contains(['\\', '\0']);
        if !plain {
            return Err(Error::Internal(format!("invalid blob key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

impl DirBlobStore {
    /// Writes the stream to a staged file and renames it to `target` once
    /// complete and durable.
    async fn write_file(
        &self,
        target: &Path,
        mut body: BorrowedStream<'_>,
    ) -> std::io::Result<u64> {
        let temp = self.staging.join(crate::domain::new_id());
        let written = async {
            // Before anything is written, then every MiB.
            self.check_free_space()?;
            let mut file = tokio::fs::File::create(&temp).await?;
            let mut size = 0u64;
            let mut checked_at = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size - checked_at >= FREE_SPACE_CHECK_EVERY {
                    checked_at = size;
                    self.check_free_space()?;
                }
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            tokio::fs::rename(&temp, target).await?;
            Ok::<_, std::io::Error>(size)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        written
    }

    /// The folder of an upload's parts. Upload ids are ours, but are still
    /// checked to be one plain name.
    fn upload_dir(&self, upload: &str) -> Result<PathBuf> {
        let plain = !upload.is_empty()
            && upload
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(Error::Internal(format!("invalid upload id {upload:?}")));
        }
        Ok(self.parts.join(upload))
    }
}

/// The parts in `dir`, in order, copied into a staged file that becomes
/// `target`.
fn join_parts(staging: &Path, dir: &Path, parts: &[StoredPart], target: &Path) -> Result<u64> {
    let temp = staging.join(crate::domain::new_id());
    let joined = (|| -> Result<u64> {
        let mut out = std::fs::File::create(&temp)?;
        let mut size = 0u64;
        for part in parts {
            let mut file = std::fs::File::open(dir.join(part.number.to_string()))
                .map_err(|err| missing_part(err, part.number))?;
            // Between files, the kernel copies (copy_file_range).
            let copied = std::io::copy(&mut file, &mut out)?;
            if copied != part.size {
                return Err(Error::Storage(format!(
                    "part {} is {copied} bytes, not {}",
                    part.number, part.size
                )));
            }
            size += copied;
        }
        out.sync_all()?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&temp, target)?;
        Ok(size)
    })();
    if joined.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    joined
}

fn missing_part(err: std::io::Error, number: u32) -> Error {
    if err.kind() == std::io::ErrorKind::NotFound {
        Error::Storage(format!("part {number} of the upload is missing"))
    } else {
        err.into()
    }
}

/// Uploads no one completed or aborted (their workers died) for longer than
/// S3 keeps them.
fn drop_abandoned_uploads(parts: &Path) {
    let Ok(entries) = std::fs::read_dir(parts) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age > ABANDONED_PARTS_AFTER);
        if old {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl DirBlobStore {
    async fn open_blob(&self, key: &str) -> Result<tokio::fs::File> {
        let path = self.path_of(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(file),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(Error::not_found("File")),
            Err(err) => Err(err.into()),
        }
    }
}

#[async_trait]
impl BlobStore for DirBlobStore {
    async fn put(&self, key: &str, body: BorrowedStream<'_>) -> Result<u64> {
        let target = self.path_of(key)?;
        Ok(self.write_file(&target, body).await?)
    }

    async fn get(&self, key: &str) -> Result<ByteStream> {
        let file = self.open_blob(key).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file,
            crate::stream::CHUNK,
        )))
    }

    /// The file itself: through `get`, every 256 KiB an import read waited
    /// for a blocking-pool thread, behind the import's own store writes.
    async fn reader(&self, key: &str) -> Result<BlockingReader> {
        Ok(Box::new(self.open_blob(key).await?.into_std().await))
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<ByteStream> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = self.open_blob(key).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file.take(length),
            crate::stream::CHUNK,
        )))
    }

    async fn reader_from(&self, key: &str, offset: u64) -> Result<BlockingReader> {
        use std::io::Seek;
        let mut file = self.open_blob(key).await?.into_std().await;
        file.seek(std::io::SeekFrom::Start(offset))?;
        Ok(Box::new(file))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobInfo>> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            // Walk only the directory the prefix lies in.
            let dir_part = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
            let mut out = Vec::new();
            let start = if dir_part.is_empty() {
                root.clone()
            } else {
                root.join(dir_part)
            };
            let mut pending = vec![start];
            while let Some(dir) = pending.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err.into()),
                };
                for entry in entries {
                    let entry = entry?;
                    let kind = entry.file_type()?;
                    let path = entry.path();
                    if path.starts_with(root.join(".staging"))
                        || path.starts_with(root.join(PARTS_DIR))
                    {
                        continue;
                    }
                    if kind.is_dir() {
                        pending.push(path);
                    } else if kind.is_file() {
                        let key = path
                            .strip_prefix(&root)
                            .map_err(Error::internal)?
                            .to_string_lossy()
                            .replace(std::path::MAIN_SEPARATOR, "/");
                        if key.starts_with(&prefix) {
                            let metadata = match entry.metadata() {
                                Ok(metadata) => metadata,
                                // Deleted since its directory was read (a
                                // concurrent prefix delete): no blob now.
                                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                                Err(err) => return Err(err.into()),
                            };
                            out.push(BlobInfo {
                                key,
                                size: metadata.len(),
                                modified: metadata.modified().ok().map(Into::into),
                            });
                        }
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(Error::internal)?
    }

    async fn folders(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = self.root.join(prefix.trim_end_matches('/'));
        let hidden = [self.staging.clone(), self.parts.clone()];
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(err) => return Err(err.into()),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() && !hidden.contains(&entry.path()) {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            names.sort();
            Ok(names)
        })
        .await
        .map_err(Error::internal)?
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        for blob in self.list(prefix).await? {
            let path = self.path_of(&blob.key)?;
            match tokio::fs::remove_file(&path).await {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
            // Directories left empty go too; a non-empty one stops the climb.
            let mut dir = path.parent();
            while let Some(current) = dir.filter(|d| *d != self.root) {
                if tokio::fs::remove_dir(current).await.is_err() {
                    break;
                }
                dir = current.parent();
            }
        }
        Ok(())
    }

    async fn download_url(&self, key: &str, file_name: &str, ttl: Duration) -> Result<String> {
        self.path_of(key)?;
        let expires = now().timestamp() + ttl.as_secs() as i64;
        let signature = self.signer.sign(Action::Download, key, expires, file_name);
        Ok(format!(
            "{}/-/blobs/{}?expires={expires}&filename={}&signature={signature}",
            self.public_url,
            encode_path(key),
            encode_component(file_name),
        ))
    }

    async fn upload_url(&self, key: &str, ttl: Duration) -> Result<String> {
        self.path_of(key)?;
        let expires = now().timestamp() + ttl.as_secs() as i64;
        let signature = self.signer.sign(Action::Upload, key, expires, "");
        Ok(format!(
            "{}/-/blobs/{}?expires={expires}&signature={signature}",
            self.public_url,
            encode_path(key),
        ))
    }

    async fn start_parts(&self, key: &str) -> Result<String> {
        self.path_of(key)?;
        let upload = crate::domain::new_id();
        tokio::fs::create_dir_all(self.upload_dir(&upload)?).await?;
        Ok(upload)
    }

    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        body: BorrowedStream<'_>,
    ) -> Result<StoredPart> {
        self.path_of(key)?;
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(Error::Internal(format!("invalid part number {number}")));
        }
        let dir = self.upload_dir(upload)?;
        if !tokio::fs::try_exists(&dir).await? {
            return Err(Error::Storage(format!(
                "no upload {upload} (completed or aborted)"
            )));
        }
        let size = self.write_file(&dir.join(number.to_string()), body).await?;
        Ok(StoredPart {
            number,
            size,
            receipt: size.to_string(),
        })
    }

    async fn complete_parts(&self, key: &str, upload: &str, parts: &[StoredPart]) -> Result<u64> {
        let target = self.path_of(key)?;
        let dir = self.upload_dir(upload)?;
        if !tokio::fs::try_exists(&dir).await? {
            // Completed before (its parts went then), or never started.
            return match tokio::fs::metadata(&target).await {
                Ok(done) => Ok(done.len()),
                Err(_) => Err(Error::Storage(format!("no upload {upload}"))),
            };
        }
        let mut ordered = parts.to_vec();
        ordered.sort_by_key(|part| part.number);
        // The joined file takes as much again as its parts.
        self.check_free_space()?;
        let size = {
            let (staging, dir, target) = (self.staging.clone(), dir.clone(), target.clone());
            tokio::task::spawn_blocking(move || join_parts(&staging, &dir, &ordered, &target))
                .await
                .map_err(Error::internal)??
        };
        tokio::fs::remove_dir_all(&dir).await?;
        Ok(size)
    }

    async fn abort_parts(&self, key: &str, upload: &str) -> Result<()> {
        self.path_of(key)?;
        match tokio::fs::remove_dir_all(self.upload_dir(upload)?).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    async fn drop_stale_parts(&self, before: chrono::DateTime<chrono::Utc>) -> Result<usize> {
        let before = std::time::SystemTime::from(before);
        let mut dropped = 0;
        let mut uploads = match tokio::fs::read_dir(&self.parts).await {
            Ok(uploads) => uploads,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err.into()),
        };
        while let Some(upload) = uploads.next_entry().await? {
            // A part written touches its folder: its time is the last write.
            let touched = upload.metadata().await?.modified()?;
            if touched < before {
                match tokio::fs::remove_dir_all(upload.path()).await {
                    Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                        return Err(err.into())
                    }
                    _ => dropped += 1,
                }
            }
        }
        Ok(dropped)
    }

    /// Files are joined whatever their sizes.
    fn min_part_bytes(&self) -> u64 {
        0
    }
}
