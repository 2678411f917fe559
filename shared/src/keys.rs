//! Where things live in the blob store: every key and prefix is built here,
//! and `template.yaml`'s lifecycle rules are written against these prefixes
//! (`exports/`, `imports/`; `projects/` is never expired by age).

/// Every project's folder: `projects/<id>/`.
pub const PROJECTS: &str = "projects/";

/// Everything a project's content generations store in the blob store.
pub fn project_prefix(project_id: u64) -> String {
    format!("{PROJECTS}{project_id}/")
}

/// Every content generation's folder of a project.
pub fn generations_prefix(project_id: u64) -> String {
    format!("{}content/", project_prefix(project_id))
}

/// Everything a content generation stores in the blob store (S3 holds its
/// records there too; the embedded store only its files).
pub fn content_prefix(project_id: u64, generation: &str) -> String {
    format!("{}{generation}/", generations_prefix(project_id))
}

/// The archive's opaque files (bundles, uploads) of a generation.
pub fn content_files_prefix(project_id: u64, generation: &str) -> String {
    format!("{}files/", content_prefix(project_id, generation))
}

/// A generation's project attributes (`tree/project.json`).
pub fn content_attributes_key(project_id: u64, generation: &str) -> String {
    format!("{}project.json", content_prefix(project_id, generation))
}

/// One chunk of a relation's records: its NDJSON lines from `first_seq` on,
/// as `writer` wrote them (chunks of earlier versions name none). Two
/// writers never write the same object: a chunk the manifest names is the
/// one its owner wrote.
pub fn content_chunk_key(
    project_id: u64,
    generation: &str,
    relation: &str,
    first_seq: u64,
    writer: Option<u32>,
) -> String {
    let by = writer.map(|w| format!(".w{w}")).unwrap_or_default();
    format!(
        "{}tree/{relation}/{first_seq:020}{by}.ndjson",
        content_prefix(project_id, generation)
    )
}

/// Every project's export archives and relations export runs.
pub const EXPORTS: &str = "exports/";

/// Export archives live under `exports/` and uploads under `imports/` so that
/// bucket lifecycle rules can expire each by prefix.
pub fn exports_prefix(project_id: u64) -> String {
    format!("{EXPORTS}{project_id}/")
}

/// Every relations export run of a project.
pub fn relation_exports_prefix(project_id: u64) -> String {
    format!("{}relations/", exports_prefix(project_id))
}

/// The files of one relations export run.
pub fn relation_export_run_prefix(project_id: u64, run_id: &str) -> String {
    format!("{}{run_id}/", relation_exports_prefix(project_id))
}

/// Where a relations export part's file goes: `file` in the run, or in
/// the relation's batch `n`.
pub fn relation_export_part_key(
    project_id: u64,
    run_id: &str,
    relation: &str,
    batch: Option<u32>,
    file: &str,
) -> String {
    let run = relation_export_run_prefix(project_id, run_id);
    match batch {
        Some(n) => format!("{run}{relation}/{n}/{file}"),
        None => format!("{run}{file}"),
    }
}

/// Everything of one full export job.
pub fn export_prefix(project_id: u64, job_id: &str) -> String {
    format!("{}{job_id}/", exports_prefix(project_id))
}

pub fn export_key(project_id: u64, job_id: &str) -> String {
    format!("{}export.tar.gz", export_prefix(project_id, job_id))
}

/// A sliced export's plan and its slices' records, beside its archive
/// until the archive is complete.
pub fn export_slices_prefix(project_id: u64, job_id: &str) -> String {
    format!("{}slices/", export_prefix(project_id, job_id))
}

pub fn export_slice_plan_key(project_id: u64, job_id: &str) -> String {
    format!("{}plan.json", export_slices_prefix(project_id, job_id))
}

/// What slice `slice` of the export wrote (`slice_of_record_key` reads it back).
pub fn export_slice_record_key(project_id: u64, job_id: &str, slice: usize) -> String {
    format!(
        "{}{slice}.written",
        export_slices_prefix(project_id, job_id)
    )
}

/// The slice whose record `key` is, under `prefix` (`export_slices_prefix`).
pub fn slice_of_record_key(key: &str, prefix: &str) -> Option<usize> {
    key.strip_prefix(prefix)?
        .strip_suffix(".written")?
        .parse()
        .ok()
}

/// Every upload's prefix.
pub const UPLOADS: &str = "imports/";

pub fn upload_prefix(upload_id: &str) -> String {
    format!("{UPLOADS}{upload_id}/")
}

/// Whether `key` is an uploaded archive's (not, say, a remote URL's).
pub fn is_upload_key(key: &str) -> bool {
    key.starts_with(UPLOADS)
}

pub fn upload_key(upload_id: &str) -> String {
    format!("{}archive.tar.gz", upload_prefix(upload_id))
}

/// Everything of the upload whose archive is at `upload_key`.
pub fn upload_folder(upload_key: &str) -> String {
    match upload_key.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => upload_key.to_owned(),
    }
}
