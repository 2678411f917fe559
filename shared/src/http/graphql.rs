//! `POST /api/graphql`: the GraphQL a GitLab destination sends this server
//! when it migrates a project from here (GitLab's `lib/bulk_imports`
//! queries: the project, its members, its snippets' repositories, the
//! ghost user and users by id), and nothing else. The schema keeps GitLab's
//! names, arguments and types for those fields, so a destination that
//! introspects first and checks its queries against the answer (GitLab 17's
//! client does) finds them. Every resolver reads through the services,
//! with the caller's rights.

use async_graphql::{
    Context, EmptyMutation, EmptySubscription, Enum, Object, Schema, SimpleObject, ID,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::extract::{BaseUrl, Caller};
use crate::domain::members::Member;
use crate::domain::{gitlab_time, Project, User};
use crate::service::{self, ProjectRef};
use crate::{App, Error};

/// Where GitLab serves it: beside `/api/v4`, not under it.
pub const GRAPHQL_PATH: &str = "/api/graphql";

/// GitLab's largest page of a connection; a `first` above it is cut to it.
const MAX_PAGE: usize = 100;

type GitLabSchema = Schema<Query, EmptyMutation, EmptySubscription>;

fn schema() -> GitLabSchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        // Deep enough for the standard introspection query, which GitLab
        // 17's client sends first; every field here is cheap.
        .limit_depth(20)
        .limit_complexity(2_000)
        .finish()
}

/// A GraphQL request as clients send it.
#[derive(serde::Deserialize)]
pub struct GraphqlRequest {
    query: String,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
}

pub async fn graphql(
    State(app): State<App>,
    caller: Result<Caller, Error>,
    BaseUrl(base): BaseUrl,
    Json(request): Json<GraphqlRequest>,
) -> Response {
    // GitLab's answer to a token it does not take, in GraphQL's shape.
    let Ok(Caller(user)) = caller else {
        let refused = serde_json::json!({"errors": [{"message": "Invalid token"}]});
        return (StatusCode::UNAUTHORIZED, Json(refused)).into_response();
    };
    let mut query = async_graphql::Request::new(request.query)
        .data(app)
        .data(user)
        .data(Base(base));
    if let Some(name) = request.operation_name.filter(|n| !n.is_empty()) {
        query = query.operation_name(name);
    }
    if let Some(variables) = request.variables.filter(Value::is_object) {
        query = query.variables(async_graphql::Variables::from_json(variables));
    }
    let answer = schema().execute(query).await;
    (StatusCode::OK, Json(answer)).into_response()
}

struct Base(String);

fn gid(kind: &str, id: u64) -> ID {
    ID(format!("gid://gitlab/{kind}/{id}"))
}

/// The number a `gid://gitlab/<kind>/<n>` (or a bare number) names.
fn gid_number(id: &str) -> Option<u64> {
    id.rsplit('/').next()?.parse().ok()
}

fn failed(err: Error) -> async_graphql::Error {
    async_graphql::Error::new(err.to_string())
}

pub struct Query;

#[Object]
impl Query {
    /// A project the caller may see, by its full path; `null` otherwise,
    /// as GitLab answers for a project it hides.
    async fn project(
        &self,
        ctx: &Context<'_>,
        full_path: ID,
    ) -> async_graphql::Result<Option<GraphqlProject>> {
        let (app, user) = (ctx.data::<App>()?, ctx.data::<User>()?);
        match service::find_project(app, user, &ProjectRef::Path(full_path.0.clone())).await {
            Ok(project) => Ok(Some(GraphqlProject(project))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(failed(err)),
        }
    }

    /// Users by username or id. There is no ghost user here, nor bots:
    /// `humans: false` finds no one.
    async fn users(
        &self,
        ctx: &Context<'_>,
        usernames: Option<Vec<String>>,
        ids: Option<Vec<ID>>,
        humans: Option<bool>,
        #[graphql(name = "after")] _after: Option<String>,
    ) -> async_graphql::Result<UserConnection> {
        let app = ctx.data::<App>()?;
        let mut nodes = Vec::new();
        if humans != Some(false) {
            for username in usernames.iter().flatten().take(MAX_PAGE) {
                if let Some(user) = app.users.user_by_username(username).await.map_err(failed)? {
                    nodes.push(UserCore::of(&user));
                }
            }
            for id in ids.iter().flatten().take(MAX_PAGE) {
                let Some(number) = gid_number(id) else {
                    continue;
                };
                if let Some(user) = app.users.user(number).await.map_err(failed)? {
                    nodes.push(UserCore::of(&user));
                }
            }
        }
        Ok(UserConnection {
            page_info: PageInfo::last(),
            nodes,
        })
    }
}

pub struct GraphqlProject(Project);

#[Object(name = "Project")]
impl GraphqlProject {
    async fn id(&self) -> ID {
        gid("Project", self.0.id)
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn full_path(&self) -> String {
        self.0.full_path()
    }

    /// Every project here is private.
    async fn visibility(&self) -> &str {
        "private"
    }

    async fn created_at(&self) -> String {
        gitlab_time(&self.0.created_at)
    }

    /// Where GitLab serves the repository over git; this server does not
    /// speak git (the repository travels as the `repository` relation).
    async fn http_url_to_repo(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        let base = ctx.data::<Base>()?;
        Ok(format!("{}/{}.git", base.0, self.0.full_path()))
    }

    /// No snippet repository is served over git here: none is listed, so
    /// a destination clones none (the snippets' records come in the
    /// `snippets` relation).
    async fn snippets(&self) -> SnippetConnection {
        SnippetConnection {
            page_info: PageInfo::last(),
            nodes: Vec::new(),
        }
    }

    /// The project's members, `first` at a time (at most 100) after the
    /// cursor `after`. Here every member is direct: `relations` asks for
    /// nothing else.
    async fn project_members(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "relations")] _relations: Option<Vec<ProjectMemberRelation>>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<MemberConnection> {
        let app = ctx.data::<App>()?;
        let count = first.map_or(MAX_PAGE, |n| n.clamp(0, MAX_PAGE as i32) as usize);
        let from: u64 = match after.as_deref() {
            None | Some("") => 0,
            Some(cursor) => cursor
                .parse()
                .map_err(|_| async_graphql::Error::new("invalid cursor"))?,
        };
        let (members, total) = service::members::range(app, &self.0, from, count)
            .await
            .map_err(failed)?;
        let end = from + count as u64;
        Ok(MemberConnection {
            page_info: PageInfo {
                end_cursor: (end < total).then(|| end.to_string()),
                has_next_page: end < total,
            },
            nodes: members.iter().map(ProjectMember::of).collect(),
        })
    }
}

/// GitLab's `ProjectMemberRelation`.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum ProjectMemberRelation {
    Direct,
    Inherited,
    Descendants,
    InvitedGroups,
    SharedIntoAncestors,
}

#[derive(SimpleObject)]
pub struct PageInfo {
    end_cursor: Option<String>,
    has_next_page: bool,
}

impl PageInfo {
    fn last() -> Self {
        PageInfo {
            end_cursor: None,
            has_next_page: false,
        }
    }
}

#[derive(SimpleObject)]
#[graphql(name = "MemberInterfaceConnection")]
pub struct MemberConnection {
    page_info: PageInfo,
    nodes: Vec<ProjectMember>,
}

#[derive(SimpleObject)]
pub struct ProjectMember {
    created_at: Option<String>,
    updated_at: Option<String>,
    expires_at: Option<String>,
    access_level: AccessLevel,
    user: Option<UserCore>,
}

impl ProjectMember {
    fn of(member: &Member) -> Self {
        ProjectMember {
            created_at: member.created_at.clone(),
            updated_at: member.created_at.clone(),
            expires_at: member.expires_at.clone(),
            access_level: AccessLevel {
                integer_value: member.access_level as i32,
                string_value: access_level_name(member.access_level).into(),
            },
            user: Some(UserCore {
                id: gid("User", member.user_id),
                username: member.username.clone(),
                name: member
                    .name
                    .clone()
                    .unwrap_or_else(|| member.username.clone()),
                public_email: member.public_email.clone(),
                user_type: UserType::Human,
            }),
        }
    }
}

fn access_level_name(level: u64) -> &'static str {
    match level {
        10 => "GUEST",
        15 => "PLANNER",
        20 => "REPORTER",
        30 => "DEVELOPER",
        40 => "MAINTAINER",
        50 => "OWNER",
        _ => "NO_ACCESS",
    }
}

#[derive(SimpleObject)]
pub struct AccessLevel {
    integer_value: i32,
    string_value: String,
}

#[derive(SimpleObject)]
pub struct UserCore {
    id: ID,
    username: String,
    name: String,
    public_email: Option<String>,
    #[graphql(name = "type")]
    user_type: UserType,
}

impl UserCore {
    fn of(user: &User) -> Self {
        UserCore {
            id: gid("User", user.id),
            username: user.username.clone(),
            name: user.name.clone(),
            public_email: None,
            user_type: UserType::Human,
        }
    }
}

/// GitLab's `UserType`, the values a destination tells apart.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub enum UserType {
    Human,
    Ghost,
}

#[derive(SimpleObject)]
#[graphql(name = "UserCoreConnection")]
pub struct UserConnection {
    page_info: PageInfo,
    nodes: Vec<UserCore>,
}

#[derive(SimpleObject)]
pub struct Snippet {
    title: String,
    created_at: String,
    http_url_to_repo: Option<String>,
}

#[derive(SimpleObject)]
#[graphql(name = "SnippetConnection")]
pub struct SnippetConnection {
    page_info: PageInfo,
    nodes: Vec<Snippet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gid_names_its_number() {
        assert_eq!(gid("Project", 7).0, "gid://gitlab/Project/7");
        assert_eq!(gid_number("gid://gitlab/User/12"), Some(12));
        assert_eq!(gid_number("12"), Some(12));
        assert_eq!(gid_number("gid://gitlab/User/x"), None);
    }
}
