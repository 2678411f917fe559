//! A corpus of hostile import archives, generated (never stored as blobs):
//! each one is a way an archive from a stranger could hurt the server, with
//! the words its `import_error` must contain.

use std::io::{Read, Write};

/// One entry written exactly as given, whatever its path or type.
pub struct RawEntry {
    pub path: String,
    pub kind: tar::EntryType,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

impl RawEntry {
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Self {
        RawEntry {
            path: path.into(),
            kind: tar::EntryType::Regular,
            link: None,
            data: data.into(),
        }
    }

    pub fn special(path: &str, kind: tar::EntryType, link: Option<&str>) -> Self {
        RawEntry {
            path: path.into(),
            kind,
            link: link.map(str::to_owned),
            data: Vec::new(),
        }
    }
}

fn header(path: &str, kind: tar::EntryType, link: Option<&str>, size: u64) -> tar::Header {
    let mut header = tar::Header::new_old();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(kind);
    let old = header.as_old_mut();
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(link) = link {
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_cksum();
    header
}

pub fn raw_tar_gz(entries: &[RawEntry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for entry in entries {
        let header = header(
            &entry.path,
            entry.kind,
            entry.link.as_deref(),
            entry.data.len() as u64,
        );
        builder
            .append(&header, entry.data.as_slice())
            .expect("entry");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

/// The base entries, then an extension header (`kind`) claiming `claimed`
/// bytes, followed by far fewer: the claim alone must be refused.
fn claimed_extension(kind: tar::EntryType, claimed: u64) -> Vec<u8> {
    let mut tar = Vec::new();
    for entry in base() {
        let header = header(&entry.path, entry.kind, None, entry.data.len() as u64);
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(&entry.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    let header = header("././@LongLink", kind, None, claimed);
    tar.extend_from_slice(header.as_bytes());
    tar.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// A `.tar.gz` whose GNU long name claims `claimed` bytes and holds 64 KiB.
pub fn long_name_tar_gz(claimed: u64) -> Vec<u8> {
    claimed_extension(tar::EntryType::GNULongName, claimed)
}

/// The base entries and one file at `path`, a name longer than a tar
/// header holds (written with a GNU long-name entry).
fn with_long_path(path: &str) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut append = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, data).expect("entry");
    };
    for entry in base() {
        append(&entry.path, &entry.data);
    }
    append(path, b"x");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar.into_inner().expect("tar")).expect("gzip");
    gz.finish().expect("gzip")
}

/// The same bytes as a `.tar.gz` of several gzip members, each holding
/// `piece` bytes of the tar stream (as pigz and parallel writers cut it).
pub fn as_gzip_members(tar_gz: &[u8], piece: usize) -> Vec<u8> {
    let tar = crate::gunzip(tar_gz);
    let mut out = Vec::new();
    for chunk in tar.chunks(piece) {
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        member.write_all(chunk).expect("gzip");
        out.extend(member.finish().expect("gzip"));
    }
    out
}

fn base() -> Vec<RawEntry> {
    vec![
        RawEntry::file("VERSION", "0.2.4"),
        RawEntry::file("tree/project.json", "{}"),
    ]
}

fn with(extra: Vec<RawEntry>) -> Vec<u8> {
    let mut entries = base();
    entries.extend(extra);
    raw_tar_gz(&entries)
}

fn issues(lines: &[u8]) -> Vec<u8> {
    with(vec![RawEntry::file("tree/project/issues.ndjson", lines)])
}

/// A tiny archive that expands to `expanded` bytes of zeros.
pub fn gzip_bomb(expanded: u64) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::best(),
    ));
    for entry in base() {
        let header = header(&entry.path, entry.kind, None, entry.data.len() as u64);
        builder
            .append(&header, entry.data.as_slice())
            .expect("entry");
    }
    let header = header("project.bundle", tar::EntryType::Regular, None, expanded);
    builder
        .append(&header, std::io::repeat(0).take(expanded))
        .expect("bomb");
    let mut gz = builder.into_inner().expect("tar");
    gz.flush().expect("flush");
    gz.finish().expect("gzip")
}

/// Limits the server under test runs with (flags of `local serve`).
pub const LIMIT_FLAGS: &[&str] = &[
    "--max-uncompressed-bytes",
    "50000000",
    "--max-entries",
    "40",
    "--max-record-bytes",
    "4096",
    "--max-json-depth",
    "16",
    "--max-upload-bytes",
    "3000000",
    "--max-relations",
    "20",
];

/// (name, archive, what the import error must say)
pub fn corpus() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let deep = format!("{}1{}\n", "{\"a\":[".repeat(20), "]}".repeat(20));
    let many: Vec<RawEntry> = (0..50)
        .map(|i| RawEntry::file(&format!("uploads/f{i}"), "x"))
        .collect();
    vec![
        (
            "parent-dir",
            with(vec![RawEntry::file("../../../tmp/owned", "x")]),
            "unsafe path",
        ),
        (
            "absolute",
            with(vec![RawEntry::file("/etc/cron.d/owned", "x")]),
            "unsafe path",
        ),
        (
            "normalises-outside",
            with(vec![RawEntry::file("uploads/../../owned", "x")]),
            "unsafe path",
        ),
        (
            "symlink",
            with(vec![RawEntry::special(
                "uploads/passwd",
                tar::EntryType::Symlink,
                Some("/etc/passwd"),
            )]),
            "symbolic link",
        ),
        (
            "hardlink",
            with(vec![RawEntry::special(
                "uploads/key",
                tar::EntryType::Link,
                Some("/etc/shadow"),
            )]),
            "hard link",
        ),
        (
            "char-device",
            with(vec![RawEntry::special(
                "uploads/null",
                tar::EntryType::Char,
                None,
            )]),
            "character device",
        ),
        (
            "block-device",
            with(vec![RawEntry::special(
                "uploads/sda",
                tar::EntryType::Block,
                None,
            )]),
            "block device",
        ),
        (
            "fifo",
            with(vec![RawEntry::special(
                "uploads/pipe",
                tar::EntryType::Fifo,
                None,
            )]),
            "FIFO",
        ),
        (
            "gzip-bomb",
            gzip_bomb(120_000_000),
            "expands to more than 50000000 bytes",
        ),
        ("too-many-entries", with(many), "more than 40 entries"),
        (
            "long-line",
            issues(format!("{{\"t\":\"{}\"}}\n", "x".repeat(5000)).as_bytes()),
            "line longer than the limit",
        ),
        (
            "invalid-json",
            issues(b"{\"iid\":1,\n"),
            "line 1: invalid JSON",
        ),
        ("too-deep", issues(deep.as_bytes()), "nested deeper than 16"),
        (
            "invalid-utf8",
            issues(b"{\"title\":\"\xff\xfe\"}\n"),
            "invalid UTF-8",
        ),
        (
            "not-an-object",
            issues(b"[1,2,3]\n"),
            "must be a JSON object",
        ),
        (
            "no-version",
            raw_tar_gz(&[RawEntry::file("tree/project.json", "{}")]),
            "no VERSION file",
        ),
        (
            "unsupported-version",
            raw_tar_gz(&[
                RawEntry::file("VERSION", "9.9.9"),
                RawEntry::file("tree/project.json", "{}"),
            ]),
            "unsupported export version",
        ),
        (
            "no-project",
            raw_tar_gz(&[RawEntry::file("VERSION", "0.2.4")]),
            "neither tree/project.json nor project.json",
        ),
        (
            "bad-relation-name",
            with(vec![RawEntry::file(
                "tree/project/Evil Name!.ndjson",
                "{}\n",
            )]),
            "invalid relation name",
        ),
        (
            "duplicate-entry",
            with(vec![RawEntry::file("tree/project.json", "{}")]),
            "duplicate entry",
        ),
        (
            "truncated",
            {
                let mut a = issues(&b"{\"iid\":1}\n".repeat(2000));
                a.truncate(a.len() / 2);
                a
            },
            "corrupt or truncated",
        ),
        (
            "not-gzip",
            b"PK\x03\x04 this is a zip file".to_vec(),
            "not a gzip archive",
        ),
        ("empty-file", Vec::new(), "not a gzip archive"),
        (
            "gnu-long-name-claiming-512-mib",
            claimed_extension(tar::EntryType::GNULongName, 512 << 20),
            "extension header of 536870912 bytes",
        ),
        (
            "pax-header-claiming-512-mib",
            claimed_extension(tar::EntryType::XHeader, 512 << 20),
            "extension header of 536870912 bytes",
        ),
        (
            "long-name-over-4-kib",
            with_long_path(&format!("uploads/{}f", "d/".repeat(3000))),
            "unsafe path",
        ),
        (
            "legacy-attributes-over-the-limit",
            raw_tar_gz(&[
                RawEntry::file("VERSION", "0.2.4"),
                RawEntry::file(
                    "project.json",
                    format!("{{\"description\":\"{}\"}}", "x".repeat(9 << 20)),
                ),
            ]),
            "the project attributes are larger than the limit of 8388608 bytes",
        ),
        (
            "legacy-record-over-the-limit",
            raw_tar_gz(&[
                RawEntry::file("VERSION", "0.2.4"),
                RawEntry::file(
                    "project.json",
                    format!("{{\"issues\":[{{\"title\":\"{}\"}}]}}", "x".repeat(1 << 20)),
                ),
            ]),
            "a record larger than the limit of 4096 bytes",
        ),
        (
            "file-and-directory",
            with(vec![
                RawEntry::file("uploads/a", "x"),
                RawEntry::file("uploads/a/b", "y"),
            ]),
            "both a file and a directory named \"uploads/a\"",
        ),
        (
            "directory-then-file",
            with(vec![
                RawEntry::file("uploads/c/d", "x"),
                RawEntry::file("uploads/c", "y"),
            ]),
            "both a file and a directory named \"uploads/c\"",
        ),
        (
            "component-over-255-bytes",
            with_long_path(&format!("uploads/{}", "n".repeat(300))),
            "unsafe path",
        ),
        (
            "too-many-relations",
            with(
                (0..25)
                    .map(|i| RawEntry::file(&format!("tree/project/r{i}.ndjson"), "{}\n"))
                    .collect(),
            ),
            "more than 20 relation files",
        ),
        (
            "trailing-garbage",
            {
                let mut a = issues(b"{\"iid\":1}\n");
                a.extend_from_slice(b"and then some garbage");
                a
            },
            "corrupt or truncated",
        ),
        (
            "missing-trailer",
            {
                let mut a = issues(b"{\"iid\":1}\n");
                a.truncate(a.len() - 8);
                a
            },
            "corrupt or truncated",
        ),
        (
            "bad-crc-in-a-later-member",
            {
                let whole = issues(&b"{\"iid\":1}\n".repeat(200));
                let mut a = as_gzip_members(&whole, 1024);
                // The second-last member's CRC-32 (each trailer: CRC, size).
                let last = a.windows(3).rposition(|w| w == [0x1f, 0x8b, 8]).unwrap();
                a[last - 8] ^= 0xff;
                a
            },
            "corrupt or truncated",
        ),
    ]
}
