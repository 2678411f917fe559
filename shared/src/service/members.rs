//! The members API: a project's members, read from its `project_members`
//! records.

use crate::domain::members::Member;
use crate::domain::Project;
use crate::ports::{GenerationRef, RecordPages};
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
    let first = (page.saturating_sub(1) as u64).saturating_mul(per_page as u64);
    range(app, project, first, per_page).await
}

/// The members of records `first..first + count`, and how many records
/// there are.
pub async fn range(
    app: &App,
    project: &Project,
    first: u64,
    count: usize,
) -> Result<(Vec<Member>, u64)> {
    let Some(generation) = project.relation_generation(RELATION) else {
        return Ok((Vec::new(), 0));
    };
    let at = GenerationRef::new(project.id, generation);
    let total = app
        .content
        .relations(at)
        .await?
        .into_iter()
        .find(|stats| stats.relation == RELATION)
        .map_or(0, |stats| stats.records);
    let mut members = Vec::with_capacity(count.min(100));
    if first < total && count > 0 {
        let mut pages =
            RecordPages::new(app.content.as_ref(), at, RELATION, count).within(first, count as u64);
        while let Some(records) = pages.next().await? {
            members.extend(records.iter().filter_map(|r| Member::of_record(&r.json)));
        }
    }
    Ok((members, total))
}
