//! Which paths an archive may hold: inside its root, unpackable on any file
//! system (no path both a file and a directory, none repeated, no component
//! too long), and extension headers (long names, PAX) of bounded size.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path};

use super::corrupt;
use crate::archive::{ArchiveError, RELATION_DIR};
use crate::relations;

/// The longest entry path kept: GitLab's upload paths are far shorter, and
/// a path is echoed in errors and becomes a blob key.
pub(super) const MAX_PATH_BYTES: usize = 4096;

/// The largest extension header (GNU long name or link, PAX) read: one of
/// 512 MiB must not become an allocation of 512 MiB.
pub(super) const MAX_EXTENSION_BYTES: u64 = 64 * 1024;

/// A name as it is echoed in an error: at most 256 characters of it.
pub(super) fn shown(name: &str) -> String {
    const SHOWN: usize = 256;
    match name.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &name[..at]),
        None => name.to_owned(),
    }
}

/// The longest path component a file system holds.
pub(super) const MAX_COMPONENT_BYTES: usize = 255;

/// The paths seen so far: an archive must unpack on any file system, so no
/// path is both a file and a directory, none repeats, and no component is
/// longer than a file system takes.
#[derive(Default)]
pub(super) struct Tree {
    files: HashSet<String>,
    dirs: HashSet<String>,
}

impl Tree {
    /// The paths seen, files then directories, for a reader that goes on
    /// in a later run.
    pub(super) fn paths(&self) -> (Vec<String>, Vec<String>) {
        let sorted = |set: &HashSet<String>| {
            let mut paths: Vec<String> = set.iter().cloned().collect();
            paths.sort_unstable();
            paths
        };
        (sorted(&self.files), sorted(&self.dirs))
    }

    pub(super) fn with_paths(files: Vec<String>, dirs: Vec<String>) -> Self {
        Tree {
            files: files.into_iter().collect(),
            dirs: dirs.into_iter().collect(),
        }
    }

    pub(super) fn add_dir(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.add_parents(path)?;
        if self.files.contains(path) {
            return Err(ArchiveError::PathConflict(shown(path)));
        }
        self.dirs.insert(path.to_owned());
        Ok(())
    }

    pub(super) fn add_file(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.add_parents(path)?;
        if self.dirs.contains(path) {
            return Err(ArchiveError::PathConflict(shown(path)));
        }
        if !self.files.insert(path.to_owned()) {
            return Err(ArchiveError::DuplicateEntry(shown(path)));
        }
        Ok(())
    }

    fn add_parents(&mut self, path: &str) -> Result<(), ArchiveError> {
        if path.split('/').any(|part| part.len() > MAX_COMPONENT_BYTES) {
            return Err(ArchiveError::UnsafePath(shown(path)));
        }
        let mut end = 0;
        while let Some(at) = path[end..].find('/') {
            let dir = &path[..end + at];
            if self.files.contains(dir) {
                return Err(ArchiveError::PathConflict(shown(dir)));
            }
            if !self.dirs.contains(dir) {
                self.dirs.insert(dir.to_owned());
            }
            end += at + 1;
        }
        Ok(())
    }
}

/// Extension headers seen since the last real entry: what they say about
/// the next one.
#[derive(Default)]
pub(super) struct Extensions {
    long_name: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Extensions {
    /// Reads the entry if it is an extension header (within the size cap);
    /// false for a real entry.
    pub(super) fn take_extension(
        &mut self,
        entry: &mut tar::Entry<'_, impl Read>,
        entry_type: tar::EntryType,
    ) -> Result<bool, ArchiveError> {
        let slot = if entry_type.is_gnu_longname() {
            Some(&mut self.long_name)
        } else if entry_type.is_pax_local_extensions() {
            Some(&mut self.pax)
        } else if entry_type.is_gnu_longlink() || entry_type.is_pax_global_extensions() {
            None
        } else {
            return Ok(false);
        };
        let size = entry.header().entry_size().map_err(corrupt)?;
        if size > MAX_EXTENSION_BYTES {
            return Err(ArchiveError::ExtensionTooLarge {
                size,
                limit: MAX_EXTENSION_BYTES,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(corrupt)?;
        if let Some(slot) = slot {
            if slot.replace(bytes).is_some() {
                return Err(ArchiveError::Corrupt(
                    "two extension headers describe the same entry".into(),
                ));
            }
        }
        Ok(true)
    }

    /// The next entry's name and size as the extensions give them (a PAX
    /// path wins over a GNU long name, as in GNU tar), clearing them.
    pub(super) fn for_next_entry(&mut self) -> Result<(Option<String>, Option<u64>), ArchiveError> {
        let mut name = self.long_name.take().map(|mut bytes| {
            while bytes.last() == Some(&0) {
                bytes.pop();
            }
            String::from_utf8_lossy(&bytes).into_owned()
        });
        let mut size = None;
        if let Some(pax) = self.pax.take() {
            for extension in tar::PaxExtensions::new(&pax) {
                let extension = extension.map_err(corrupt)?;
                match extension.key() {
                    Ok("path") => {
                        name = Some(String::from_utf8_lossy(extension.value_bytes()).into_owned())
                    }
                    Ok("size") => {
                        let value = extension.value().ok().and_then(|v| v.parse().ok());
                        size = Some(
                            value
                                .ok_or_else(|| ArchiveError::Corrupt("invalid PAX size".into()))?,
                        );
                    }
                    _ => {}
                }
            }
        }
        Ok((name, size))
    }
}

/// `tree/project/<relation>.ndjson` → the relation; other paths are blobs.
pub(super) fn relation_of(path: &str) -> Result<Option<String>, ArchiveError> {
    let Some(name) = path
        .strip_prefix(RELATION_DIR)
        .and_then(|rest| rest.strip_suffix(".ndjson"))
    else {
        return Ok(None);
    };
    if !relations::is_valid_name(name) {
        return Err(ArchiveError::InvalidRelation(name.to_owned()));
    }
    Ok(Some(name.to_owned()))
}

/// The entry's path relative to the archive root, or `None` for the root
/// itself. Anything that could point outside the root is refused.
pub(super) fn normalize(raw: &str) -> Result<Option<String>, ArchiveError> {
    let unsafe_path = || ArchiveError::UnsafePath(shown(raw));
    if raw.contains('\0') || raw.contains('\\') {
        return Err(unsafe_path());
    }
    let mut parts = Vec::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or_else(unsafe_path)?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path())
            }
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}
