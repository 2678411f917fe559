//! Acceptance: GitLab's own fixture exports import, export and re-import with
//! every record intact.

use e2e::{fixture_archive, fixture_relations, fixtures_dir, read_archive, Server, ROOT_TOKEN};
use serde_json::Value;

fn is_gitlab_export_name(name: &str, full_path: &str) -> bool {
    // 2017-12-05_22-11-148_namespace_project_export.tar.gz
    let suffix = format!("_{}_export.tar.gz", full_path.replace('/', "_"));
    let Some(stamp) = name.strip_suffix(&suffix) else {
        return false;
    };
    stamp.len() == 20
        && stamp.chars().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => c == '-',
            10 => c == '_',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn complex_ndjson_fixture_survives_export_and_reimport() {
    let server = Server::start();
    let expected = fixture_relations("complex");
    assert!(
        expected.len() > 20,
        "fixture relations found: {}",
        expected.len()
    );

    let status = server.import_and_wait(
        ROOT_TOKEN,
        fixture_archive("complex"),
        &[("path", "complex")],
    );
    assert_eq!(status["import_status"], "finished", "{status}");
    let id = status["id"].as_u64().unwrap();

    let (name, archive) = server.export_and_download(ROOT_TOKEN, id);
    assert!(is_gitlab_export_name(&name, "root/complex"), "{name}");
    let exported = read_archive(&archive);
    assert_eq!(exported.relations, expected);
    let attributes: serde_json::Map<String, Value> = serde_json::from_slice(
        &std::fs::read(fixtures_dir().join("complex/tree/project.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(exported.attributes, attributes);
    assert_eq!(exported.files["VERSION"], b"0.2.4");

    // Records are kept byte for byte, not only in meaning.
    let fixture_issues =
        std::fs::read(fixtures_dir().join("complex/tree/project/issues.ndjson")).unwrap();
    let mut tar = tar::Archive::new(flate2::read::MultiGzDecoder::new(archive.as_slice()));
    let issues = tar
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap().to_str() == Some("tree/project/issues.ndjson"))
        .map(|mut e| {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            data
        })
        .unwrap();
    let lines = |bytes: &[u8]| -> Vec<Vec<u8>> {
        bytes
            .split(|&b| b == b'\n')
            .map(|l| l.trim_ascii().to_vec())
            .filter(|l| !l.is_empty())
            .collect()
    };
    assert_eq!(lines(&issues), lines(&fixture_issues));

    // What we export, we (and GitLab) import again, unchanged.
    let again = server.import_and_wait(ROOT_TOKEN, archive, &[("path", "complex-again")]);
    assert_eq!(again["import_status"], "finished", "{again}");
    let (_, second) = server.export_and_download(ROOT_TOKEN, again["id"].as_u64().unwrap());
    let second = read_archive(&second);
    assert_eq!(second.relations, expected);
    assert_eq!(second.attributes, attributes);
}

#[test]
fn legacy_project_json_fixture_imports_and_exports_as_ndjson() {
    let server = Server::start();
    let legacy: serde_json::Map<String, Value> =
        serde_json::from_slice(&std::fs::read(fixtures_dir().join("light/project.json")).unwrap())
            .unwrap();
    let relation_keys = ["milestones", "labels", "issues", "services", "snippets"];

    let status = server.import_and_wait(ROOT_TOKEN, fixture_archive("light"), &[("path", "light")]);
    assert_eq!(status["import_status"], "finished", "{status}");
    assert_eq!(status["description"], legacy["description"]);
    let id = status["id"].as_u64().unwrap();
    let (_, archive) = server.export_and_download(ROOT_TOKEN, id);
    let exported = read_archive(&archive);

    for key in relation_keys {
        let records = legacy[key].as_array().unwrap();
        if records.is_empty() {
            assert!(!exported.relations.contains_key(key), "{key}");
        } else {
            assert_eq!(&exported.relations[key], records, "{key}");
        }
    }
    let mut attributes = legacy.clone();
    attributes.retain(|k, _| !relation_keys.contains(&k.as_str()));
    assert_eq!(exported.attributes, attributes);
}
