//! This server as the source of a GitLab instance's migration (direct
//! transfer): the requests a GitLab destination makes of its source for one
//! project, replayed in GitLab's order, with GitLab's parameters and
//! authentication, and each answer read as GitLab's code reads it. Recorded
//! from GitLab's `lib/bulk_imports` and `app/services/bulk_imports` (the
//! client `BulkImports::Clients::HTTP` sends the token as `private_token`
//! and `page`/`per_page` on every REST call; `BulkImports::Clients::Graphql`
//! sends `Authorization: Bearer`), stage by stage as
//! `BulkImports::Projects::Stage` runs the pipelines. On the embedded
//! default (the local server) and on moto (the router over the AWS
//! adapters).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use e2e::stores::{moto_app_with, start_import, work_queue};
use e2e::{fixture_archive, fixture_relations, Server, ROOT_TOKEN};
use shared::Settings;

/// GitLab 17's client introspects first and checks each query against the
/// schema it gets (graphql-js's standard query, as graphql-ruby sends it).
const INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } mutationType { name } subscriptionType { name } types { ...FullType } directives { name description locations args { ...InputValue } } } }
fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue } interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason } possibleTypes { ...TypeRef } }
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";

/// `BulkImports::Projects::Graphql::GetProjectQuery`.
const GET_PROJECT: &str = "query($full_path: ID!) {
  project(fullPath: $full_path) {
    id
    name
    visibility
    created_at: createdAt
  }
}";

/// `BulkImports::Common::Graphql::GetMembersQuery` for a project.
const GET_MEMBERS: &str = "query($full_path: ID!, $cursor: String, $per_page: Int) {
  portable: project(fullPath: $full_path) {
    members: projectMembers(relations: [DIRECT, INHERITED, INVITED_GROUPS, SHARED_INTO_ANCESTORS], first: $per_page, after: $cursor) {
      page_info: pageInfo {
        next_page: endCursor
        has_next_page: hasNextPage
      }
      nodes {
        created_at: createdAt
        updated_at: updatedAt
        expires_at: expiresAt
        access_level: accessLevel {
          integer_value: integerValue
        }
        user {
          user_gid: id
          public_email: publicEmail
          username: username
          name: name
        }
      }
    }
  }
}";

/// `BulkImports::Projects::Graphql::GetSnippetRepositoryQuery`.
const GET_SNIPPET_REPOSITORIES: &str = "query($full_path: ID!) {
  project(fullPath: $full_path) {
    snippets {
      page_info: pageInfo {
        next_page: endCursor
        has_next_page: hasNextPage
      }
      nodes {
        title
        createdAt
        httpUrlToRepo
      }
    }
  }
}";

/// `BulkImports::SourceInternalUserFinder`'s ghost user query.
const GHOST_USER: &str = r#"{
  users(usernames: ["ghost", "ghost1", "ghost2", "ghost3", "ghost4", "ghost5", "ghost6"], humans: false) {
    nodes {
      id
      username
      type
    }
  }
}"#;

/// `Import::BulkImports::Common::Graphql::GetUsersQuery`.
const GET_USERS: &str = "query($ids: [ID!], $cursor: String) {
  users(ids: $ids, after: $cursor) {
    pageInfo {
      next_page: endCursor
      has_next_page: hasNextPage
    }
    nodes {
      id
      name
      username
    }
  }
}";

/// The NDJSON pipelines by stage (`BulkImports::Projects::Stage`, CE).
const NDJSON_STAGES: &[&[&str]] = &[
    &["labels", "milestones"],
    &["issues", "snippets"],
    &[
        "boards",
        "merge_requests",
        "external_pull_requests",
        "protected_branches",
        "project_feature",
        "container_expiration_policy",
        "service_desk_setting",
        "releases",
    ],
    &[
        "ci_pipelines",
        "auto_devops",
        "pipeline_schedules",
        "commit_notes",
    ],
];

/// Drives the source's workers where nothing else does (moto).
type Work<'a> = &'a (dyn Fn() -> BoxFuture<'a, ()> + Sync);

struct Destination<'a> {
    client: reqwest::Client,
    base: String,
    token: &'a str,
    work: Work<'a>,
}

impl Destination<'_> {
    /// A REST call as `BulkImports::Clients::HTTP` makes it.
    fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut params: Vec<(&str, &str)> = query.to_vec();
        params.extend([
            ("page", "1"),
            ("per_page", "30"),
            ("private_token", self.token),
        ]);
        self.client
            .request(method, format!("{}/api/v4{path}", self.base))
            .query(&params)
    }

    async fn get_json(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .rest(reqwest::Method::GET, path, query)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A GraphQL query as the newest client sends it (17's sends the same
    /// after introspecting); its `data`, with no `errors`.
    async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/api/graphql", self.base))
            .bearer_auth(self.token)
            .json(&json!({"query": query, "operationName": null, "variables": variables}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert!(answer.get("errors").is_none(), "{answer}");
        answer["data"].clone()
    }

    /// `PipelineWorker`: the relation's status, until it is no longer
    /// `started` (0).
    async fn finished_status(&self, project: u64, relation: &str) -> Value {
        let path = format!("/projects/{project}/export_relations/status");
        for _ in 0..600 {
            (self.work)().await;
            let (status, answer) = self.get_json(&path, &[("relation", relation)]).await;
            assert_eq!(status, 200, "{relation}: {answer}");
            if answer["status"] != 0 {
                assert_eq!(answer["status"], 1, "{relation}: {answer}");
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{relation} never finished");
    }

    /// A relation's file (or each batch), as `FileDownloadService` takes
    /// it: redirects followed, `Content-Type` exactly one of two, gzip.
    async fn download(&self, project: u64, relation: &str) -> Vec<Vec<u8>> {
        let status = self.finished_status(project, relation).await;
        let path = format!("/projects/{project}/export_relations/download");
        let batches: Vec<Option<String>> = if status["batched"] == true {
            let count = status["batches_count"].as_u64().unwrap();
            (1..=count).map(|n| Some(n.to_string())).collect()
        } else {
            vec![None]
        };
        let mut files = Vec::new();
        for batch in batches {
            let mut query = vec![("relation", relation)];
            if let Some(n) = &batch {
                query.extend([("batched", "true"), ("batch_number", n.as_str())]);
            }
            let response = self
                .rest(reqwest::Method::GET, &path, &query)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{relation} {batch:?}");
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                ["application/gzip", "application/octet-stream"].contains(&content_type.as_str()),
                "{relation}: {content_type}"
            );
            let gzip = response.bytes().await.unwrap();
            let mut data = Vec::new();
            flate2::read::MultiGzDecoder::new(&gzip[..])
                .read_to_end(&mut data)
                .unwrap();
            files.push(data);
        }
        files
    }
}

/// What the destination took from the source.
#[derive(Default)]
struct Migrated {
    attributes: Value,
    relations: BTreeMap<String, Vec<Value>>,
    members: Vec<(String, u64)>,
    badges: Vec<Value>,
    files: BTreeMap<String, Vec<String>>,
}

/// The requests of one project's migration, in GitLab's order.
async fn replay(destination: &Destination<'_>, full_path: &str) -> Migrated {
    let mut migrated = Migrated::default();
    // `BulkImports::CreateService#validate!`.
    let (status, version) = destination.get_json("/version", &[]).await;
    assert_eq!(status, 200);
    let numbers: Vec<u64> = version["version"]
        .as_str()
        .unwrap()
        .split(['.', '-'])
        .take(3)
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(numbers[0] >= 14, "BulkImport::MIN_MAJOR_VERSION: {version}");
    // Batched exports (16.2), the token's scopes checked (15.5).
    assert!((numbers[0], numbers[1]) >= (16, 2), "{version}");
    assert_eq!(version["enterprise"], false);
    let (status, metadata) = destination.get_json("/metadata", &[]).await;
    assert_eq!((status, &metadata["version"]), (200, &version["version"]));
    let (status, token) = destination
        .get_json("/personal_access_tokens/self", &[])
        .await;
    assert_eq!(status, 200);
    assert!(
        token["scopes"].as_array().unwrap().contains(&json!("api")),
        "{token}"
    );
    let schema = destination.graphql(INTROSPECTION, json!({})).await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query");
    let types: Vec<&str> = schema["__schema"]["types"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        types.contains(&"Project") && types.contains(&"ProjectMemberRelation"),
        "{types:?}"
    );
    let project = destination
        .graphql(GET_PROJECT, json!({"full_path": full_path}))
        .await;
    let gid = project["project"]["id"].as_str().unwrap();
    let project_id: u64 = gid
        .strip_prefix("gid://gitlab/Project/")
        .unwrap()
        .parse()
        .unwrap();
    let status_path = format!("/projects/{project_id}/export_relations/status");
    let (status, _) = destination.get_json(&status_path, &[]).await;
    assert_eq!(status, 200, "validate_setting_enabled!");

    // `ExportRequestWorker`: the ghost user, the project again, the export.
    let ghost = destination.graphql(GHOST_USER, json!({})).await;
    assert!(ghost["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["type"] != "GHOST"));
    destination
        .graphql(GET_PROJECT, json!({"full_path": full_path}))
        .await;
    let response = destination
        .rest(
            reqwest::Method::POST,
            &format!("/projects/{project_id}/export_relations"),
            &[("batched", "true")],
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // Stage 0: the project. Stage 1: repository bundle, attributes, members.
    destination
        .graphql(GET_PROJECT, json!({"full_path": full_path}))
        .await;
    let repository = destination.download(project_id, "repository").await;
    migrated
        .files
        .insert("repository".into(), tar_names(&repository[0]));
    let attributes = destination.download(project_id, "self").await;
    migrated.attributes = serde_json::from_slice(&attributes[0]).unwrap();
    let mut cursor = Value::Null;
    loop {
        let variables = json!({"full_path": full_path, "cursor": cursor, "per_page": 500});
        let page = destination.graphql(GET_MEMBERS, variables).await;
        let members = &page["portable"]["members"];
        for member in members["nodes"].as_array().unwrap() {
            migrated.members.push((
                member["user"]["username"].as_str().unwrap().to_owned(),
                member["access_level"]["integer_value"].as_u64().unwrap(),
            ));
            assert!(member["user"]["user_gid"]
                .as_str()
                .unwrap()
                .starts_with("gid://gitlab/User/"));
        }
        if members["page_info"]["has_next_page"] != true {
            break;
        }
        cursor = members["page_info"]["next_page"].clone();
    }
    // Stages 2 to 5: NDJSON relations, with badges (REST), snippets'
    // repositories (GraphQL), the wiki (REST) and the file relations.
    for (stage, relations) in NDJSON_STAGES.iter().enumerate() {
        for relation in *relations {
            let mut records = Vec::new();
            for batch in destination.download(project_id, relation).await {
                for line in String::from_utf8(batch).unwrap().lines() {
                    records.push(serde_json::from_str(line).unwrap());
                }
            }
            if !records.is_empty() {
                migrated.relations.insert((*relation).to_owned(), records);
            }
        }
        match stage {
            0 => {
                let (status, badges) = destination
                    .get_json(&format!("/projects/{project_id}/badges"), &[])
                    .await;
                assert_eq!(status, 200);
                migrated.badges = badges.as_array().unwrap().clone();
            }
            2 => {
                let snippets = destination
                    .graphql(
                        GET_SNIPPET_REPOSITORIES,
                        json!({"full_path": full_path, "cursor": null, "per_page": 500}),
                    )
                    .await;
                let connection = &snippets["project"]["snippets"];
                assert_eq!(connection["page_info"]["has_next_page"], false);
                assert_eq!(connection["nodes"], json!([]), "no repository to clone");
            }
            3 => {
                // No wiki to clone: GitLab reads 404 as none.
                let (status, _) = destination
                    .get_json(&format!("/projects/{project_id}/wikis"), &[])
                    .await;
                assert_eq!(status, 404);
                for relation in ["uploads", "lfs_objects", "design"] {
                    let file = destination.download(project_id, relation).await;
                    migrated.files.insert(relation.into(), tar_names(&file[0]));
                }
            }
            _ => {}
        }
    }
    // `UpdateSourceUsersService`: the members' users by id.
    let ids: Vec<String> = (1..=3).map(|n| format!("gid://gitlab/User/{n}")).collect();
    let users = destination
        .graphql(GET_USERS, json!({"ids": ids, "after": null}))
        .await;
    assert_eq!(users["users"]["pageInfo"]["has_next_page"], false);
    migrated
}

fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(tar);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// What the destination took is the project: every relation GitLab's
/// pipelines read, the members, the badges, the files in GitLab's layout.
fn assert_whole(migrated: &Migrated) {
    let fixture = fixture_relations("complex");
    for (relation, records) in &migrated.relations {
        assert_eq!(Some(records), fixture.get(relation), "{relation}");
    }
    assert!(migrated.relations["issues"].len() >= 10);
    assert!(migrated.relations.contains_key("merge_requests"));
    let mut members: Vec<(String, u64)> = fixture["project_members"]
        .iter()
        .map(|m| {
            (
                m["user"]["username"].as_str().unwrap().to_owned(),
                m["access_level"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut migrated_members = migrated.members.clone();
    members.sort();
    migrated_members.sort();
    assert_eq!(migrated_members, members);
    let badges: Vec<&Value> = fixture["project_badges"].iter().collect();
    assert_eq!(migrated.badges.len(), badges.len());
    for (badge, record) in migrated.badges.iter().zip(badges) {
        assert_eq!(badge["link_url"], record["link_url"]);
        assert_eq!(badge["image_url"], record["image_url"]);
        assert_eq!(badge["kind"], "project");
    }
    assert!(migrated.attributes.is_object());
    assert_eq!(migrated.files["lfs_objects"], vec!["lfs_objects.json"]);
    assert!(migrated.files["repository"].is_empty());
}

#[test]
fn a_gitlab_destination_migrates_a_project_from_the_local_server() {
    let server = Server::start();
    let imported = server.import_and_wait(
        ROOT_TOKEN,
        fixture_archive("complex"),
        &[("path", "origin")],
    );
    assert_eq!(imported["import_status"], "finished");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nothing = || -> BoxFuture<'_, ()> { Box::pin(async {}) };
    let destination = Destination {
        client: reqwest::Client::new(),
        base: server.base.clone(),
        token: ROOT_TOKEN,
        work: &nothing,
    };
    let migrated = runtime.block_on(replay(&destination, "root/origin"));
    assert_whole(&migrated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_destination_migrates_a_project_from_aws() {
    let (app, _, _) = moto_app_with(Settings::clone).await;
    shared::auth::ensure_root(&app, Some(ROOT_TOKEN))
        .await
        .unwrap();
    let root = app.users.user_by_username("root").await.unwrap().unwrap();
    start_import(&app, &root, "origin", fixture_archive("complex")).await;
    work_queue(&app).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = shared::http::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let work = || -> BoxFuture<'_, ()> {
        Box::pin(async {
            work_queue(&app).await;
        })
    };
    let destination = Destination {
        client: reqwest::Client::new(),
        base,
        token: ROOT_TOKEN,
        work: &work,
    };
    let migrated = replay(&destination, "root/origin").await;
    assert_whole(&migrated);
}

/// The routes a destination calls refuse what GitLab's refuse: no token,
/// someone else's project, queries outside the schema or too deep, bodies
/// that are not GraphQL requests.
#[test]
fn the_source_routes_refuse_what_gitlab_refuses() {
    let server = Server::start();
    let (_, alice) = server.create_user("alice");
    let imported = server.import_and_wait(&alice, fixture_archive("complex"), &[("path", "kept")]);
    let id = imported["id"].as_u64().unwrap();
    let (_, bob) = server.create_user("bob");
    for path in [
        "/version".to_owned(),
        "/metadata".to_owned(),
        "/personal_access_tokens/self".to_owned(),
        format!("/projects/{id}/badges"),
    ] {
        assert_eq!(server.get(None, &path).status(), 401, "{path}");
        assert_eq!(
            server.get(Some("glpat-not-a-token-at-all"), &path).status(),
            401,
            "{path}"
        );
    }
    let token: Value = server
        .get(Some(&bob), "/personal_access_tokens/self")
        .json()
        .unwrap();
    assert_eq!(token["scopes"], json!(["api"]));
    assert_eq!(token["active"], true);
    assert!(
        token.get("token").is_none(),
        "the secret is never shown again"
    );
    let hidden = server.get(Some(&bob), &format!("/projects/{id}/badges"));
    assert_eq!(hidden.status(), 404);
    assert_eq!(
        hidden.json::<Value>().unwrap(),
        json!({"message": "404 Project Not Found"})
    );
    let badges = server.get(Some(&alice), &format!("/projects/{id}/badges?per_page=1"));
    assert_eq!(badges.status(), 200);
    assert_eq!(badges.headers()["x-per-page"], "1");
    assert_eq!(
        server
            .get(Some(&alice), &format!("/projects/{id}/badges?page=x"))
            .status(),
        400
    );

    let client = reqwest::blocking::Client::new();
    let graphql = |token: Option<&str>, body: Value| {
        let mut request = client
            .post(format!("{}/api/graphql", server.base))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap_or(Value::Null))
    };
    let project = json!({"query": GET_PROJECT, "variables": {"full_path": "alice/kept"}});
    let (status, refused) = graphql(None, project.clone());
    assert_eq!(
        (status, refused),
        (401, json!({"errors": [{"message": "Invalid token"}]}))
    );
    let (status, mine) = graphql(Some(&alice), project.clone());
    assert_eq!(status, 200);
    assert_eq!(
        mine["data"]["project"]["id"],
        format!("gid://gitlab/Project/{id}")
    );
    // Someone else's project is null, as GitLab answers for one it hides.
    let (status, theirs) = graphql(Some(&bob), project);
    assert_eq!(
        (status, &theirs["data"]["project"]),
        (200, &Value::Null),
        "{theirs}"
    );
    // Outside the schema, a wrong variable, too deep: GraphQL's errors.
    for query in [
        json!({"query": "{ project(fullPath: \"alice/kept\") { password } }"}),
        json!({"query": "{ projects { nodes { id } } }"}),
        json!({"query": "query($p: ID!) { project(fullPath: $p) { id } }", "variables": {}}),
        json!({"query": "{ project(fullPath: \"a\") { "}),
        json!({"query": format!("{{ {}__typename{} }}", "__schema { types { fields { type { ofType { ".repeat(4), " } } } } }".repeat(4))}),
    ] {
        let (status, answer) = graphql(Some(&alice), query.clone());
        assert_eq!(status, 200, "{query}");
        assert!(
            answer["errors"].as_array().is_some_and(|e| !e.is_empty()),
            "{query}: {answer}"
        );
    }
    // Not a GraphQL request at all.
    let (status, _) = graphql(Some(&alice), json!({"variables": {}}));
    assert!((400..500).contains(&status), "{status}");
    let (status, _) = graphql(Some(&alice), json!([1, 2]));
    assert!((400..500).contains(&status), "{status}");
}
