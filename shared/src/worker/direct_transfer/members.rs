//! The source project's members, brought along. GitLab's relations export
//! leaves members out (its destination reads them from the source's API
//! and maps them to its own users); here the members part of a migration
//! reads the source's members API (`/projects/:id/members/all`, which
//! GitLab and this server both answer), keeps each member whose username a
//! user of this instance has, with its access level and expiry, and stages
//! them as the `project_members` relation of the archive to be. A member
//! no user matches is a failure of the entity, saying why.
//!
//! Why the username: GitLab matched by public e-mail, which its REST API
//! does not show and users here do not have; its newer placeholder users
//! need a mapping step by the destination's owners. A username is what
//! both APIs give and what a person migrating between their own instances
//! keeps.

use std::io::Write;

use bytes::Bytes;
use flate2::write::GzEncoder;

use super::Part;
use crate::domain::members::{Member, ACCESS_LEVELS};
use crate::domain::{ImportFailure, Job};
use crate::remote::source::SourceInstance;
use crate::{App, Error, Result};

/// The relation the members become.
pub(super) const RELATION: &str = "project_members";

/// Pages of 100 members read at most: a source claiming more is refused.
const MAX_PAGES: u32 = 1_000;

/// Unmatched members listed one by one; the rest are counted in one more
/// failure. The failures live in the job's item, which DynamoDB holds to
/// 400 KB.
const MAX_LISTED: usize = 100;

/// The part of the plan that brings the members.
pub(super) fn part() -> Part {
    Part {
        relation: RELATION.to_owned(),
        batch: None,
    }
}

fn failures_key(staging: &str) -> String {
    format!("{staging}{RELATION}.failures.json")
}

/// The members matched (as a gzipped `project_members.ndjson`) and the
/// failures of those that were not. Its failures are stored first, then
/// the file staged, so a staged members file always has its failures.
pub(super) async fn fetch(
    app: &App,
    job: &Job,
    remote: &SourceInstance,
    project_id: u64,
) -> Result<(Bytes, Vec<ImportFailure>)> {
    let mut ndjson = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut failures = Vec::new();
    let mut unlisted = 0u64;
    let mut kept = 0u64;
    for page in 1..=MAX_PAGES + 1 {
        if page > MAX_PAGES {
            return Err(Error::BadRequest(format!(
                "the source project has more than {} members",
                MAX_PAGES * 100
            )));
        }
        let (members, next) = remote.members(project_id, page).await?;
        for answer in &members {
            match matched(app, answer).await? {
                Ok(member) => {
                    kept += 1;
                    let record = member.to_record(kept).to_string();
                    ndjson
                        .write_all(record.as_bytes())
                        .map_err(Error::internal)?;
                    ndjson.write_all(b"\n").map_err(Error::internal)?;
                }
                Err(_) if failures.len() == MAX_LISTED => unlisted += 1,
                Err(reason) => {
                    let at = (failures.len(), RELATION);
                    failures.push(super::failure(job, at, UNMATCHED, reason));
                }
            }
        }
        if !next || members.is_empty() {
            break;
        }
    }
    if unlisted > 0 {
        let reason = format!("{unlisted} more members are not kept, for the same reasons");
        let at = (failures.len(), RELATION);
        failures.push(super::failure(job, at, UNMATCHED, reason));
    }
    tracing::info!(
        kept,
        unmatched = failures.len() as u64 - u64::from(unlisted > 0) + unlisted,
        "the source's members matched"
    );
    let gzip = ndjson.finish().map_err(Error::internal)?;
    Ok((Bytes::from(gzip), failures))
}

/// The member as this instance keeps it, or why it is not kept.
async fn matched(
    app: &App,
    answer: &serde_json::Value,
) -> Result<std::result::Result<Member, String>> {
    let Some(member) = Member::of_api(answer) else {
        return Ok(Err(
            "the source listed a member without a username or an access level".into(),
        ));
    };
    let username = crate::redact::text(&member.username)
        .chars()
        .take(255)
        .collect::<String>();
    if !ACCESS_LEVELS.contains(&member.access_level) {
        return Ok(Err(format!(
            "{username}: the access level {} is not a project's",
            member.access_level
        )));
    }
    let Some(user) = app.users.user_by_username(&member.username).await? else {
        return Ok(Err(format!(
            "{username}: no user of this instance has this username"
        )));
    };
    Ok(Ok(Member {
        user_id: user.id,
        username: user.username,
        name: Some(user.name),
        ..member
    }))
}

/// A member no user here matches.
const UNMATCHED: &str = "BulkImports::UnmatchedMember";

pub(super) async fn save_failures(
    app: &App,
    staging: &str,
    failures: &[ImportFailure],
) -> Result<()> {
    crate::ports::put_json(&*app.blobs, &failures_key(staging), &failures).await
}

/// The failures of the staged members; none if there was no members part.
pub(super) async fn load_failures(app: &App, staging: &str) -> Result<Vec<ImportFailure>> {
    match crate::ports::get_json(&*app.blobs, &failures_key(staging)).await {
        Ok(failures) => Ok(failures),
        Err(Error::NotFound(_)) => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}
