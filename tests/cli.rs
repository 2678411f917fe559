//! The local binary explains itself: `--help` for every subcommand, naming
//! every flag and its environment variable.

use std::process::Command;

use e2e::local_binary;

fn help(args: &[&str]) -> String {
    let output = Command::new(local_binary())
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{args:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_subcommand_and_flag_has_help() {
    let top = help(&[]);
    for command in ["serve", "user", "token"] {
        assert!(top.contains(command), "{top}");
    }
    let serve = help(&["serve"]);
    for flag in [
        "--bind",
        "--data-dir",
        "--workers",
        "--public-url",
        "--download-ttl",
        "--download-redirect",
        "--max-upload-bytes",
        "--max-uncompressed-bytes",
        "--max-entries",
        "--max-record-bytes",
        "--max-json-depth",
        "--export-rate-limit",
        "--relation-batch-size",
        "--export-schedule-every",
        "--log-json",
    ] {
        let line = serve
            .lines()
            .find(|l| l.contains(flag))
            .unwrap_or_else(|| panic!("{flag} is not in `serve --help`:\n{serve}"));
        assert!(!line.trim().is_empty());
    }
    assert!(serve.contains("[env: LOCAL_DATA_DIR="), "{serve}");
    for command in [&["user", "create"][..], &["token", "create"][..]] {
        let text = help(command);
        assert!(text.contains("--data-dir"), "{text}");
    }
}
