//! A data directory on a small disk that fills up: the import that filled
//! it fails with the reason and leaves nothing behind, the store keeps
//! answering without a restart, an upload that does not fit gets a clear
//! answer, and a restart does not run the failed import again.
//!
//! Mounts a 32 MiB tmpfs, so it runs as root (as the test command does in
//! CI); anywhere else it fails saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{read_archive, synthetic_archive, Server, ROOT_TOKEN};
use serde_json::Value;

struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount(8) runs");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (this test needs root, as the test command has in CI)",
            path.display()
        );
        SmallDisk { path, _dir: dir }
    }

    fn used_bytes(&self) -> u64 {
        fn walk(path: &Path) -> u64 {
            std::fs::read_dir(path).map_or(0, |entries| {
                entries
                    .flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => walk(&e.path()),
                        _ => e.metadata().map_or(0, |m| m.len()),
                    })
                    .sum()
            })
        }
        walk(&self.path)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn a_full_disk_fails_the_job_that_filled_it_and_nothing_else() {
    let disk = SmallDisk::mount("32m");
    let data = disk.path.join("data");
    let mut server = Server::start_in(&data, &[]);

    let kept = server.import_and_wait(ROOT_TOKEN, synthetic_archive(50), &[("path", "kept")]);
    assert_eq!(kept["import_status"], "finished", "{kept}");
    let kept_id = kept["id"].as_u64().unwrap();

    // An import whose records need more than the disk has.
    let huge = synthetic_archive(150_000);
    assert!(huge.len() < 12 << 20, "{} bytes", huge.len());
    let failed = server.import_and_wait(ROOT_TOKEN, huge, &[("path", "huge")]);
    assert_eq!(failed["import_status"], "failed", "{failed}");
    let error = failed["import_error"].as_str().unwrap();
    assert!(error.contains("Insufficient Storage"), "{error}");
    let failed_id = failed["id"].as_u64().unwrap();

    // The store answers at once, without a restart, and nothing of the
    // failed import is left in the blob store.
    assert_eq!(server.get(Some(ROOT_TOKEN), "/user").status(), 200);
    let imports = data.join("blobs/imports");
    assert_eq!(std::fs::read_dir(&imports).map_or(0, |d| d.count()), 0);
    let content = data.join(format!("blobs/projects/{failed_id}"));
    assert!(!content.exists() || std::fs::read_dir(&content).unwrap().count() == 0);
    let again = server.import_and_wait(ROOT_TOKEN, synthetic_archive(20), &[("path", "after")]);
    assert_eq!(again["import_status"], "finished", "{again}");
    let (_, archive) = server.export_and_download(ROOT_TOKEN, kept_id);
    assert_eq!(read_archive(&archive).relations["issues"].len(), 50);

    // An upload bigger than what is left: a clear answer, not a reset.
    let mut noise = vec![0u8; 40 << 20];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for byte in noise.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let response = server.import(ROOT_TOKEN, noise, &[("path", "noise")]);
    assert_eq!(response.status(), 507);
    let body: Value = response.json().unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("507 Insufficient Storage"), "{message}");
    assert_eq!(std::fs::read_dir(&imports).map_or(0, |d| d.count()), 0);
    eprintln!(
        "data directory after the failures: {} bytes",
        disk.used_bytes()
    );

    // A restart does not run the failed import again.
    server.kill();
    let server = Server::start_in(&data, &[]);
    let status: Value = server
        .get(Some(ROOT_TOKEN), &format!("/projects/{failed_id}/import"))
        .json()
        .unwrap();
    assert_eq!(status["import_status"], "failed", "{status}");
    assert_eq!(server.get(Some(ROOT_TOKEN), "/user").status(), 200);
}
