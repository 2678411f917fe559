//! GitLab's JSON shapes.

use serde_json::{json, Map, Value};

use crate::domain::{
    gitlab_time, ArchiveProgress, ExportSchedule, ImportFailure, Job, JobStatus, Project,
    RelationCounts, Token, User,
};
use crate::service::bulk_imports::{BulkImportState, EntityState};
use crate::service::relation_export::{status_code, RelationState};
use crate::service::statistics::ProjectStatistics;
use crate::service::{ExportState, ImportState};

fn project_fields(project: &Project) -> Map<String, Value> {
    let value = json!({
        "id": project.id,
        "description": project.description,
        "name": project.name,
        "name_with_namespace": project.name_with_namespace(),
        "path": project.path,
        "path_with_namespace": project.full_path(),
        "created_at": gitlab_time(&project.created_at),
    });
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
}

/// GitLab's `Member` entity (a user with its access to the project).
pub fn member(member: &crate::domain::members::Member, base_url: &str) -> Value {
    json!({
        "id": member.user_id,
        "username": member.username,
        "name": member.name.as_deref().unwrap_or(&member.username),
        "state": "active",
        "locked": false,
        "avatar_url": null,
        "web_url": format!("{base_url}/{}", member.username),
        "created_at": member.created_at,
        "expires_at": member.expires_at,
        "access_level": member.access_level,
        "group_saml_identity": null,
        "membership_state": "active",
        "public_email": member.public_email,
    })
}

/// GitLab's `Badge` entity, from a `project_badges` record.
pub fn badge(record: &Value) -> Value {
    let field = |name: &str| record.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "id": field("id"),
        "name": field("name"),
        "link_url": field("link_url"),
        "image_url": field("image_url"),
        "rendered_link_url": field("link_url"),
        "rendered_image_url": field("image_url"),
        "kind": "project",
    })
}

/// GitLab's `Project` entity, the fields clients rely on.
pub fn project(project: &Project, base_url: &str) -> Value {
    let mut fields = project_fields(project);
    let web_url = format!("{base_url}/{}", project.full_path());
    let api = format!("{base_url}/api/v4/projects/{}", project.id);
    let extra = json!({
        "default_branch": null,
        "visibility": "private",
        "archived": false,
        "empty_repo": true,
        "tag_list": [],
        "topics": [],
        "ssh_url_to_repo": null,
        "http_url_to_repo": format!("{web_url}.git"),
        "web_url": web_url,
        "readme_url": null,
        "avatar_url": null,
        "forks_count": 0,
        "star_count": 0,
        "last_activity_at": gitlab_time(&project.created_at),
        "namespace": {
            "id": project.namespace_id,
            "name": project.namespace_name,
            "path": project.namespace_path,
            "kind": "user",
            "full_path": project.namespace_path,
            "parent_id": null,
            "avatar_url": null,
            "web_url": format!("{base_url}/{}", project.namespace_path),
        },
        "owner": { "id": project.owner_id },
        "creator_id": project.owner_id,
        "_links": {
            "self": api,
            "issues": format!("{api}/issues"),
            "merge_requests": format!("{api}/merge_requests"),
            "labels": format!("{api}/labels"),
            "members": format!("{api}/members"),
        },
    });
    if let Value::Object(extra) = extra {
        fields.extend(extra);
    }
    Value::Object(fields)
}

/// GitLab's `statistics` (`ProjectStatistics` entity): the sizes this
/// service holds, `0` for what it never has (pipelines, packages, the
/// container registry, commits). `records_size` and `exports_size` are
/// ours: `storage_size` counts them, as GitLab's counts all it holds.
pub fn statistics(statistics: &ProjectStatistics) -> Value {
    json!({
        "commit_count": 0,
        "storage_size": statistics.storage_size(),
        "repository_size": statistics.repository_size,
        "wiki_size": statistics.wiki_size,
        "lfs_objects_size": statistics.lfs_objects_size,
        "job_artifacts_size": 0,
        "pipeline_artifacts_size": 0,
        "packages_size": 0,
        "snippets_size": 0,
        "uploads_size": statistics.uploads_size,
        "container_registry_size": 0,
        "records_size": statistics.records_size,
        "exports_size": statistics.exports_size,
    })
}

pub fn export_status(project: &Project, state: &ExportState, base_url: &str) -> Value {
    let mut fields = project_fields(project);
    fields.insert("export_status".into(), state.status.into());
    if let Some(progress) = &state.progress {
        // Our addition: how far a running export got.
        fields.insert(
            "export_progress".into(),
            json!({
                "records_exported": progress.records_exported,
                "records_total": progress.records_total,
            }),
        );
    }
    if state.finished.is_some() {
        fields.insert(
            "_links".into(),
            json!({
                "api_url": format!("{base_url}/api/v4/projects/{}/export/download", project.id),
                "web_url": format!("{base_url}/{}/download_export", project.full_path()),
            }),
        );
    }
    Value::Object(fields)
}

pub fn import_status(project: &Project, state: &ImportState) -> Value {
    let mut fields = project_fields(project);
    fields.insert("import_status".into(), state.status.into());
    fields.insert("import_type".into(), "gitlab_project".into());
    fields.insert(
        "correlation_id".into(),
        state.job.as_ref().map(|j| j.id.clone()).into(),
    );
    fields.insert(
        "failed_relations".into(),
        state.failures.iter().map(failed_relation).collect(),
    );
    fields.insert("import_error".into(), state.error.clone().into());
    fields.insert(
        "stats".into(),
        state.job.as_ref().map_or(Value::Null, import_stats),
    );
    if let Some(job) = &state.job {
        fields.insert("records_imported".into(), job.processed.into());
        if let Some(progress) = &job.archive_progress {
            fields.insert("import_progress".into(), import_progress(job, progress));
        }
    }
    Value::Object(fields)
}

/// How far a long import got through its archive (our addition): bytes of
/// the archive read, bytes inflated, invocations, and the time left if the
/// rest goes as fast as what was read so far.
fn import_progress(job: &Job, progress: &ArchiveProgress) -> Value {
    let left = match (job.status, progress.archive_bytes) {
        (JobStatus::Finished, _) => Some(0),
        (JobStatus::Started, Some(size)) if progress.read > 0 => {
            let elapsed = (crate::domain::now() - job.created_at)
                .num_milliseconds()
                .max(0) as f64;
            let rest = size.saturating_sub(progress.read) as f64;
            Some((elapsed / 1000.0 * rest / progress.read as f64).ceil() as u64)
        }
        _ => None,
    };
    json!({
        "archive_bytes": progress.archive_bytes,
        "archive_bytes_read": progress.read,
        "inflated_bytes": progress.inflated,
        "invocations": progress.invocations,
        "estimated_seconds_left": left,
    })
}

fn failed_relation(failure: &ImportFailure) -> Value {
    json!({
        "id": failure.id,
        "created_at": gitlab_time(&failure.created_at),
        "exception_class": failure.exception_class,
        "exception_message": failure.exception_message,
        "source": failure.source,
        "relation_name": failure.relation_name,
        "line_number": failure.line_number,
    })
}

/// Per-relation counters, live while the import runs: GitLab's `stats`
/// shape (`fetched`, `imported`) plus `skipped`.
fn import_stats(job: &Job) -> Value {
    let pick = |count: fn(&RelationCounts) -> u64| -> Value {
        job.relation_counts
            .iter()
            .map(|(relation, counts)| (relation.clone(), Value::from(count(counts))))
            .collect::<Map<String, Value>>()
            .into()
    };
    json!({
        "fetched": pick(|c| c.read),
        "imported": pick(|c| c.stored),
        "skipped": pick(|c| c.skipped),
    })
}

/// GitLab's `RelationImportTracker` entity.
pub fn relation_import(project: &Project, job: &Job) -> Value {
    let status = match job.status {
        JobStatus::Queued => "created",
        JobStatus::Started => "started",
        JobStatus::Finished => "finished",
        JobStatus::Failed => "failed",
    };
    let counts = job
        .relation
        .as_ref()
        .and_then(|r| job.relation_counts.get(r))
        .cloned()
        .unwrap_or_default();
    json!({
        "id": job.number,
        "project_path": project.full_path(),
        "relation": job.relation,
        "status": status,
        "created_at": gitlab_time(&job.created_at),
        "updated_at": gitlab_time(&job.updated_at),
        "fetched_objects_count": counts.read,
        "imported_objects_count": counts.stored,
        "skipped_objects_count": counts.skipped,
        "error": job.error,
    })
}

pub fn user(user: &User, base_url: &str) -> Value {
    json!({
        "web_url": format!("{base_url}/{}", user.username),
        "avatar_url": null,
        "id": user.id,
        "username": user.username,
        "name": user.name,
        "state": "active",
        "is_admin": user.is_admin,
        "created_at": gitlab_time(&user.created_at),
    })
}

/// The GitLab version this server answers as a source: one whose
/// destinations ask for batched relation exports (16.2 and later), read
/// commit notes (15.10) and members (14), and check the token's `api`
/// scope (15.5). Not an enterprise edition: EE destinations then ask for
/// no EE relation.
pub const GITLAB_VERSION: &str = "17.8.0";

/// `GET /version` and `/metadata`, as GitLab answers them.
pub fn version() -> Value {
    json!({
        "version": GITLAB_VERSION,
        "revision": env!("CARGO_PKG_VERSION"),
        "kas": {"enabled": false, "externalUrl": null, "externalK8sProxyUrl": null, "version": null},
        "enterprise": false,
    })
}

/// A personal access token as GitLab shows it (`GET
/// /personal_access_tokens/self`): without its secret.
pub fn token_info(token: &Token) -> Value {
    json!({
        "id": token.id,
        "name": token.name,
        "revoked": token.revoked,
        "created_at": gitlab_time(&token.created_at),
        "description": null,
        "scopes": ["api"],
        "user_id": token.user_id,
        "last_used_at": null,
        "active": token.is_usable(crate::domain::now()),
        "expires_at": token.expires_at.map(|at| at.format("%Y-%m-%d").to_string()),
    })
}

/// A token just created, with its secret (shown this once).
pub fn token(token: &Token, secret: &str) -> Value {
    let mut view = token_info(token);
    view["token"] = json!(secret);
    view
}

/// One relation of a relations export, as GitLab's `ExportStatus` entity
/// shows it (plus `exported_objects_count`: live progress).
pub fn relation_export(state: &RelationState) -> Value {
    let part = &state.part;
    let mut view = json!({
        "relation": part.relation,
        "status": status_code(state.status()),
        "error": state.error(),
        "updated_at": gitlab_time(&state.updated_at()),
        "batched": part.batched,
        "batches_count": part.batches_count,
        "total_objects_count": part.objects_count,
        "exported_objects_count": state.exported(),
    });
    if part.batched {
        view["batches"] = state
            .batches
            .iter()
            .map(|batch| {
                json!({
                    "status": status_code(batch.status),
                    "batch_number": batch.batch,
                    "objects_count": batch.objects_count,
                    "error": batch.error,
                    "updated_at": gitlab_time(&batch.updated_at),
                })
            })
            .collect();
    }
    view
}

/// A project's export schedule (our extension) and the archives it keeps.
pub fn export_schedule(
    project: &Project,
    schedule: &ExportSchedule,
    kept: &[Job],
    base_url: &str,
) -> Value {
    let archives: Vec<Value> = kept
        .iter()
        .map(|job| {
            json!({
                "id": job.id,
                "file_name": job.file_name,
                "created_at": gitlab_time(&job.created_at),
                "finished_at": gitlab_time(&job.updated_at),
                "download_url": format!(
                    "{base_url}/api/v4/projects/{}/export_schedule/archives/{}/download",
                    project.id, job.id
                ),
            })
        })
        .collect();
    json!({
        "project_id": schedule.project_id,
        "export_type": if schedule.relations { "relations" } else { "full" },
        "batched": schedule.batched,
        "keep": schedule.keep,
        "created_at": gitlab_time(&schedule.created_at),
        "updated_at": gitlab_time(&schedule.updated_at),
        "last_scheduled_at": schedule.last_scheduled_at.as_ref().map(gitlab_time),
        "archives": archives,
    })
}

/// GitLab's offset pagination headers: `X-Total`, `X-Total-Pages`,
/// `X-Page`, `X-Per-Page`, `X-Next-Page`, `X-Prev-Page` and `Link` (absolute
/// URLs keeping the request's other parameters).
pub fn pagination_headers(
    url: &str,
    params: &std::collections::HashMap<String, String>,
    page: usize,
    per_page: usize,
    total: u64,
) -> Vec<(&'static str, String)> {
    let total_pages = (total as usize).div_ceil(per_page).max(1);
    let mut kept: Vec<(&String, &String)> = params
        .iter()
        .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "per_page")
        .collect();
    kept.sort();
    let link = |target: usize| {
        let mut pairs: Vec<(&str, String)> = kept
            .iter()
            .map(|(k, v)| (k.as_str(), (*v).clone()))
            .collect();
        pairs.push(("page", target.to_string()));
        pairs.push(("per_page", per_page.to_string()));
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{url}?{query}")
    };
    let next = (page < total_pages).then_some(page + 1);
    let prev = (page > 1).then(|| (page - 1).min(total_pages));
    let mut links = Vec::new();
    if let Some(prev) = prev {
        links.push(format!("<{}>; rel=\"prev\"", link(prev)));
    }
    if let Some(next) = next {
        links.push(format!("<{}>; rel=\"next\"", link(next)));
    }
    links.push(format!("<{}>; rel=\"first\"", link(1)));
    links.push(format!("<{}>; rel=\"last\"", link(total_pages)));
    let optional = |n: Option<usize>| n.map(|n| n.to_string()).unwrap_or_default();
    vec![
        ("x-total", total.to_string()),
        ("x-total-pages", total_pages.to_string()),
        ("x-page", page.to_string()),
        ("x-per-page", per_page.to_string()),
        ("x-next-page", optional(next)),
        ("x-prev-page", optional(prev)),
        ("link", links.join(", ")),
    ]
}

/// GitLab's `BulkImport` entity.
pub fn bulk_import(state: &BulkImportState) -> Value {
    let import = &state.import;
    json!({
        "id": import.id,
        "status": state.status.as_str(),
        "source_type": "gitlab",
        "source_url": import.source_url,
        "created_at": gitlab_time(&import.created_at),
        "updated_at": gitlab_time(&bulk_updated_at(state)),
        "has_failures": state.status.is_done() && state.has_failures(),
    })
}

fn bulk_updated_at(state: &BulkImportState) -> chrono::DateTime<chrono::Utc> {
    state
        .entities
        .iter()
        .filter_map(|e| e.job.as_ref().map(|job| job.updated_at))
        .chain([state.import.updated_at])
        .max()
        .unwrap_or(state.import.updated_at)
}

/// GitLab's `BulkImports::Entity` entity.
pub fn bulk_entity(import_id: u64, state: &EntityState) -> Value {
    let entity = &state.entity;
    let job = state.job.as_ref();
    let mut stats = Map::new();
    for (relation, counts) in job.map(|j| &j.relation_counts).into_iter().flatten() {
        if counts.read + counts.stored > 0 {
            stats.insert(
                relation.clone(),
                json!({"source": counts.read, "fetched": counts.read, "imported": counts.stored}),
            );
        }
    }
    json!({
        "id": entity.id,
        "bulk_import_id": import_id,
        "status": state.status.as_str(),
        "entity_type": "project",
        "source_full_path": entity.source_full_path,
        "destination_full_path": state.destination_full_path,
        "destination_name": entity.destination_slug,
        "destination_slug": entity.destination_slug,
        "destination_namespace": entity.destination_namespace,
        "parent_id": null,
        "namespace_id": null,
        "project_id": entity.project_id,
        "created_at": gitlab_time(&entity.created_at),
        "updated_at": gitlab_time(&job.map_or(entity.created_at, |j| j.updated_at)),
        "failures": bulk_failures(state),
        "migrate_projects": entity.migrate_projects,
        "migrate_memberships": entity.migrate_memberships,
        "has_failures": state.has_failures(),
        "stats": stats,
        // Our extension: what the source has that no migration from it
        // brings (see docs/api.md, "What a migration moves").
        "not_migrated": job.and_then(|j| j.bulk.as_ref()).map_or(&[][..], |b| &b.not_migrated[..]),
    })
}

/// GitLab's `BulkImports::EntityFailure` entities: what failed, relation by
/// relation; a migration that failed as a whole is one failure of its
/// `project` stage, as in GitLab.
pub fn bulk_failures(state: &EntityState) -> Value {
    let Some(job) = state.job.as_ref() else {
        return json!([]);
    };
    let failure = |relation: &str, class: &str, message: &str| {
        json!({
            "relation": relation,
            "exception_message": message.chars().take(255).collect::<String>(),
            "exception_class": class,
            "correlation_id_value": job.id,
            "source_url": null,
            "source_title": null,
        })
    };
    let mut failures: Vec<Value> = job
        .failures
        .iter()
        .map(|f| failure(&f.relation_name, &f.exception_class, &f.exception_message))
        .collect();
    if let (true, Some(error)) = (failures.is_empty(), &job.error) {
        failures.push(failure("project", "BulkImports::Error", error));
    }
    Value::Array(failures)
}
