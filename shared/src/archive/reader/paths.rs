//! Which paths an archive may hold: inside its root, unpackable on any file
//! system (no path both a file and a directory, none repeated, no component
//! too long), and extension headers (long names, PAX) of bounded size.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path};

use sha2::{Digest, Sha256};

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
/// longer than a file system takes. Each path is kept as a 64-bit digest,
/// 8 bytes whatever its length (its text took its length and a `String`'s
/// 24 more), and a continued import's checkpoint carries 16 hex digits a
/// path: the million entries an archive may have stay a few tens of MB.
/// Two paths sharing a digest (a chance of about one in 10^7 for a million
/// paths) can only make an archive refused, never let a bad one through.
#[derive(Default)]
pub(super) struct Tree {
    files: HashSet<u64>,
    dirs: HashSet<u64>,
}

/// A path's digest: the first 8 bytes of its SHA-256, the same in every
/// run and every version.
fn digest(path: &str) -> u64 {
    let hash = Sha256::digest(path.as_bytes());
    u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"))
}

/// Digests as one hex text, sorted, for a checkpoint.
fn to_hex(set: &HashSet<u64>) -> String {
    let mut sorted: Vec<u64> = set.iter().copied().collect();
    sorted.sort_unstable();
    let mut text = String::with_capacity(sorted.len() * 16);
    for digest in sorted {
        text.push_str(&format!("{digest:016x}"));
    }
    text
}

fn from_hex(text: &str) -> Option<HashSet<u64>> {
    if !text.len().is_multiple_of(16) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(16)
        .map(|at| u64::from_str_radix(&text[at..at + 16], 16).ok())
        .collect()
}

/// What a checkpoint keeps of a `Tree`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct SeenPaths {
    /// Digests of the files, then of the directories: 16 hex digits each.
    #[serde(default)]
    pub file_digests: String,
    #[serde(default)]
    pub dir_digests: String,
    /// The paths themselves, as checkpoints before digests kept them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<String>,
}

impl Tree {
    /// The paths seen, for a reader that goes on in a later run.
    pub(super) fn seen(&self) -> SeenPaths {
        SeenPaths {
            file_digests: to_hex(&self.files),
            dir_digests: to_hex(&self.dirs),
            files: Vec::new(),
            dirs: Vec::new(),
        }
    }

    /// The tree a checkpoint kept; `None` if it is not one we wrote.
    pub(super) fn from_seen(seen: &SeenPaths) -> Option<Self> {
        let mut files = from_hex(&seen.file_digests)?;
        let mut dirs = from_hex(&seen.dir_digests)?;
        files.extend(seen.files.iter().map(|path| digest(path)));
        dirs.extend(seen.dirs.iter().map(|path| digest(path)));
        Some(Tree { files, dirs })
    }

    pub(super) fn add_dir(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.add_parents(path)?;
        let path_digest = digest(path);
        if self.files.contains(&path_digest) {
            return Err(ArchiveError::PathConflict(shown(path)));
        }
        self.dirs.insert(path_digest);
        Ok(())
    }

    pub(super) fn add_file(&mut self, path: &str) -> Result<(), ArchiveError> {
        self.add_parents(path)?;
        let path_digest = digest(path);
        if self.dirs.contains(&path_digest) {
            return Err(ArchiveError::PathConflict(shown(path)));
        }
        if !self.files.insert(path_digest) {
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
            let dir_digest = digest(dir);
            if self.files.contains(&dir_digest) {
                return Err(ArchiveError::PathConflict(shown(dir)));
            }
            self.dirs.insert(dir_digest);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(files: &[&str]) -> Tree {
        let mut tree = Tree::default();
        for file in files {
            tree.add_file(file).unwrap();
        }
        tree
    }

    /// What a continued read takes back from its checkpoint refuses what
    /// the first read would have: a repeated file, a file where a
    /// directory was, a directory where a file was.
    #[test]
    fn the_paths_a_checkpoint_keeps_refuse_what_the_read_would_have() {
        let seen = tree_of(&["uploads/ab/one.png", "project.bundle"]).seen();
        let json = serde_json::to_string(&seen).unwrap();
        let back: SeenPaths = serde_json::from_str(&json).unwrap();
        assert_eq!(back, seen);
        let mut tree = Tree::from_seen(&back).unwrap();
        assert!(matches!(
            tree.add_file("uploads/ab/one.png"),
            Err(ArchiveError::DuplicateEntry(_))
        ));
        assert!(matches!(
            tree.add_file("uploads/ab"),
            Err(ArchiveError::PathConflict(_))
        ));
        assert!(matches!(
            tree.add_file("project.bundle/inside"),
            Err(ArchiveError::PathConflict(_))
        ));
        tree.add_file("uploads/ab/two.png").unwrap();
    }

    /// 16 hex digits a path, whatever its length: a million uploads keep a
    /// checkpoint of 16 MB of files.
    #[test]
    fn a_checkpoint_keeps_16_hex_digits_a_path() {
        let long: Vec<String> = (0..1000)
            .map(|n| format!("uploads/{:032x}/{}.png", n, "screenshot".repeat(4)))
            .collect();
        let names: Vec<&str> = long.iter().map(String::as_str).collect();
        let seen = tree_of(&names).seen();
        assert_eq!(seen.file_digests.len(), 1000 * 16);
        // `uploads` and the thousand folders in it.
        assert_eq!(seen.dir_digests.len(), 1001 * 16);
    }

    /// A checkpoint written before digests (the paths themselves) is read,
    /// and one whose digests are not ours is refused.
    #[test]
    fn checkpoints_with_paths_are_read_and_broken_ones_refused() {
        let old: SeenPaths = serde_json::from_str(
            r#"{"files": ["uploads/a/b.png"], "dirs": ["uploads", "uploads/a"]}"#,
        )
        .unwrap();
        let mut tree = Tree::from_seen(&old).unwrap();
        assert!(tree.add_file("uploads/a/b.png").is_err());
        tree.add_file("uploads/a/c.png").unwrap();
        for broken in ["0123", "zzzzzzzzzzzzzzzz", "0123456789abcdeé"] {
            let seen = SeenPaths {
                file_digests: broken.into(),
                ..SeenPaths::default()
            };
            assert!(Tree::from_seen(&seen).is_none(), "{broken}");
        }
    }
}
