//! The members API: a project's members, read from its `project_members`
//! records.

use crate::domain::members::Member;
use crate::domain::Project;
use crate::{App, Result};

const RELATION: &str = "project_members";

/// One page of the project's members (`page` from 1) and how many records
/// there are; a record naming no user (an e-mail invitation) is skipped.
pub async fn page(
    app: &App,
    project: &Project,
    page: usize,
    per_page: usize,
) -> Result<(Vec<Member>, u64)> {
    let (records, total) = super::relation_page(app, project, RELATION, page, per_page).await?;
    Ok((members_of(&records), total))
}

/// The members of records `first..first + count`, and how many records
/// there are.
pub async fn range(
    app: &App,
    project: &Project,
    first: u64,
    count: usize,
) -> Result<(Vec<Member>, u64)> {
    let (records, total) = super::relation_records(app, project, RELATION, first, count).await?;
    Ok((members_of(&records), total))
}

fn members_of(records: &[bytes::Bytes]) -> Vec<Member> {
    records
        .iter()
        .filter_map(|r| Member::of_record(r))
        .collect()
}

/// One page of the project's badges (`project_badges`), as GitLab's badges
/// API lists them, and how many there are.
pub async fn badges(
    app: &App,
    project: &Project,
    page: usize,
    per_page: usize,
) -> Result<(Vec<serde_json::Value>, u64)> {
    let (records, total) =
        super::relation_page(app, project, "project_badges", page, per_page).await?;
    let badges = records
        .iter()
        .filter_map(|r| serde_json::from_slice(r).ok())
        .collect();
    Ok((badges, total))
}
