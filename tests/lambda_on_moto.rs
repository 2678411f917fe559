//! The Lambda functions on AWS APIs served by moto: real API Gateway (HTTP
//! API, payload 2.0) events through lambda_http into each function's router,
//! and SQS events built from messages really received from moto's SQS into
//! the worker's handler.

use aws_lambda_events::event::sqs::SqsEvent;
use base64::Engine;
use e2e::{
    archive_entry, fixture_archive, fixture_relations, fixture_without_half, moto, noise,
    read_archive,
};
use lambda_http::request::LambdaRequest;
use serde_json::{json, Value};
use shared::domain::JobKind;
use shared::{auth, http, App};
use shared_aws::AwsClients;
use tower::ServiceExt;

const TOKEN: &str = "lambda-root-token-of-the-tests";

/// The functions as deployed: their routes from `http::Function`.
struct Function {
    name: &'static str,
    function: http::Function,
}

const SCHEDULE: Function = Function {
    name: "schedule",
    function: http::Function::Schedule,
};
const STATUS: Function = Function {
    name: "status",
    function: http::Function::Status,
};
const DOWNLOAD: Function = Function {
    name: "download",
    function: http::Function::Download,
};
const IMPORT: Function = Function {
    name: "import",
    function: http::Function::Import,
};

/// A request without a body through a function: `path` under `/api/v4`.
async fn call(
    app: &App,
    function: &Function,
    method: &str,
    path: &str,
) -> (u16, axum::http::HeaderMap, Value) {
    let event = api_gateway_event(method, &format!("/api/v4{path}"), None, None);
    invoke(app, function, event).await
}

/// The download function's answer to a GET of `path`, followed (see `followed`).
async fn followed_download(app: &App, path: &str) -> (String, reqwest::Response) {
    let event = api_gateway_event("GET", &format!("/api/v4{path}"), None, None);
    followed(app, event).await
}

/// The download function's answer to `event`, which must be a redirect to
/// S3, followed there: the location and S3's 200 response.
async fn followed(app: &App, event: Value) -> (String, reqwest::Response) {
    let (status, headers, _) = invoke(app, &DOWNLOAD, event).await;
    assert_eq!(status, 302, "the download function redirects to S3");
    let location = headers["location"].to_str().unwrap().to_owned();
    let response = reqwest::get(&location).await.unwrap();
    assert_eq!(response.status(), 200, "{location}");
    (location, response)
}

/// An API Gateway HTTP API event, as API Gateway sends it.
fn api_gateway_event(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> Value {
    let mut headers = json!({
        "host": "abc123.execute-api.us-east-1.amazonaws.com",
        "private-token": TOKEN,
        "user-agent": "curl/8.5.0",
        "x-forwarded-proto": "https",
    });
    if let Some(content_type) = content_type {
        headers["content-type"] = json!(content_type);
    }
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0" },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:14:00:00 +0000",
            "timeEpoch": 1795615200000u64
        },
        "body": body.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        "isBase64Encoded": body.is_some()
    })
}

/// Runs one event through a function's router, as `lambda_http::run` does.
async fn invoke(
    app: &App,
    function: &Function,
    event: Value,
) -> (u16, axum::http::HeaderMap, Value) {
    let event = serde_json::from_value(event).expect("an API Gateway v2 event");
    let request: lambda_http::http::Request<lambda_http::Body> =
        LambdaRequest::ApiGatewayV2(event).into();
    let router = http::function_router(function.function.routes(), app.clone());
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    println!("{} -> {status} {json}", function.name);
    (status, headers, json)
}

fn multipart(fields: &[(&str, &str)], file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----lambda-test-boundary";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    body.extend(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"export.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n")
            .as_bytes(),
    );
    body.extend(file);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Receives what is on the queue from moto and builds the SQS event Lambda
/// would deliver.
async fn sqs_event_from_queue(clients: &AwsClients, queue_url: &str) -> (SqsEvent, Vec<String>) {
    let mut records = Vec::new();
    let mut receipts = Vec::new();
    for _ in 0..5 {
        let received = clients
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            let attributes: serde_json::Map<String, Value> = message
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                        .collect()
                })
                .unwrap_or_default();
            receipts.push(message.receipt_handle().unwrap().to_owned());
            records.push(json!({
                "messageId": message.message_id(),
                "receiptHandle": message.receipt_handle(),
                "body": message.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "md5OfBody": message.md5_of_body(),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:work",
                "awsRegion": "us-east-1"
            }));
        }
        if !records.is_empty() {
            break;
        }
    }
    let event = serde_json::from_value(json!({ "Records": records })).expect("an SQS event");
    (event, receipts)
}

async fn run_worker_once(app: &App, clients: &AwsClients, queue_url: &str) -> Vec<String> {
    let (event, receipts) = sqs_event_from_queue(clients, queue_url).await;
    assert!(!event.records.is_empty(), "a message was queued");
    let response = shared_aws::lambda::handle_sqs_event(app, event, None).await;
    // Lambda deletes the messages that did not fail.
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    delete_received(clients, queue_url, receipts).await;
    failed
}

/// Deletes delivered messages, as Lambda does once the function returns.
async fn delete_received(clients: &AwsClients, queue_url: &str, receipts: Vec<String>) {
    for receipt in receipts {
        clients
            .sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .unwrap();
    }
}

/// Delivers what is on the queue twice to the worker, as SQS may, then
/// deletes it as Lambda does. Returns how many messages there were.
async fn deliver_twice(app: &App, clients: &AwsClients, queue_url: &str) -> usize {
    let (event, receipts) = sqs_event_from_queue(clients, queue_url).await;
    let count = event.records.len();
    let again: SqsEvent = serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
    for event in [event, again] {
        let response = shared_aws::lambda::handle_sqs_event(app, event, None).await;
        assert!(response.batch_item_failures.is_empty());
    }
    delete_received(clients, queue_url, receipts).await;
    count
}

/// Delivers what is on the queue twice at the same moment (two invocations
/// of the worker on the same batch), then deletes it. Returns how many
/// messages there were.
async fn deliver_twice_at_once(app: &App, clients: &AwsClients, queue_url: &str) -> usize {
    let (event, receipts) = sqs_event_from_queue(clients, queue_url).await;
    let count = event.records.len();
    let again: SqsEvent = serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
    let (first, second) = tokio::join!(
        shared_aws::lambda::handle_sqs_event(app, event, None),
        shared_aws::lambda::handle_sqs_event(app, again, None)
    );
    // Neither asks for a retry: a delivery that finds the job held by the
    // other run leaves it to that run.
    let failed: std::collections::HashSet<String> = first
        .batch_item_failures
        .iter()
        .chain(&second.batch_item_failures)
        .map(|f| f.item_identifier.clone())
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    delete_received(clients, queue_url, receipts).await;
    count
}

async fn setup() -> (App, AwsClients, shared_aws::AwsNames) {
    let (app, clients, names) = moto::app().await;
    auth::ensure_root(&app, Some(TOKEN)).await.unwrap();
    (app, clients, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_then_export_through_the_lambda_functions() {
    let (mut app, clients, names) = setup().await;
    // What the functions print in CloudWatch's embedded metric format.
    let metrics = std::sync::Arc::new(shared::metrics::Recorded::default());
    app.metrics = shared::metrics::Metrics::new("test-stack", metrics.clone());
    let queue_url = names.queue_url.clone();

    let (content_type, body) = multipart(&[("path", "api-project")], &fixture_archive("complex"));
    let (status, _, project) = invoke(
        &app,
        &IMPORT,
        api_gateway_event(
            "POST",
            "/api/v4/projects/import",
            Some(&content_type),
            Some(&body),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(project["import_status"], "scheduled");
    let id = project["id"].as_u64().unwrap();

    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    let (status, _, imported) = call(&app, &STATUS, "GET", &format!("/projects/{id}/import")).await;
    assert_eq!(status, 200);
    assert_eq!(imported["import_status"], "finished", "{imported}");

    let (status, _, accepted) =
        call(&app, &SCHEDULE, "POST", &format!("/projects/{id}/export")).await;
    assert_eq!(
        (status, accepted),
        (202, json!({"message": "202 Accepted"}))
    );
    // Delivered twice (at least once): still one correct archive.
    assert_eq!(deliver_twice(&app, &clients, &queue_url).await, 1);

    let (status, _, exported) = call(&app, &STATUS, "GET", &format!("/projects/{id}/export")).await;
    assert_eq!(status, 200);
    assert_eq!(exported["export_status"], "finished");
    assert_eq!(
        exported["_links"]["api_url"],
        format!("https://abc123.execute-api.us-east-1.amazonaws.com/api/v4/projects/{id}/export/download")
    );
    let archives = app
        .blobs
        .list(&shared::service::exports_prefix(id))
        .await
        .unwrap();
    assert_eq!(archives.len(), 1, "{archives:?}");
    // The finished export's row expires (DynamoDB TTL) with its archive.
    let job = app
        .jobs
        .latest_finished_job(id, JobKind::Export)
        .await
        .unwrap()
        .unwrap();
    let row = clients
        .dynamodb
        .get_item()
        .table_name(&names.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("JOB#{}", job.id)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("JOB".into()),
        )
        .send()
        .await
        .unwrap();
    let expires: i64 = row.item().unwrap()["expires_at"]
        .as_n()
        .unwrap()
        .parse()
        .unwrap();
    let week = 7 * 24 * 3600;
    assert!(
        (expires - job.updated_at.timestamp() - week).abs() < 60,
        "{expires}"
    );

    let (location, download) =
        followed_download(&app, &format!("/projects/{id}/export/download")).await;
    assert!(location.contains("X-Amz-Signature"), "{location}");
    assert!(location.contains("X-Amz-Expires=300"), "{location}");
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.contains("_root_api-project_export.tar.gz"),
        "{disposition}"
    );
    let archive = download.bytes().await.unwrap();
    assert_eq!(
        read_archive(&archive).relations,
        fixture_relations("complex")
    );

    // One line per event, each job measured once although its message came
    // twice: scheduled, then finished with its records and archive bytes.
    let lines = metrics.lines();
    let of = |kind: &str, metric: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|line| line["Kind"] == kind && line.get(metric).is_some())
            .collect()
    };
    for line in &lines {
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "test-stack", "{line}");
        assert_eq!(directive["Dimensions"], json!([["Kind"]]), "{line}");
    }
    assert_eq!(of("import", "JobsScheduled").len(), 1, "{lines:?}");
    assert_eq!(of("export", "JobsScheduled").len(), 1, "{lines:?}");
    assert!(of("import", "JobsFailed").is_empty() && of("export", "JobsFailed").is_empty());
    let records: u64 = fixture_relations("complex")
        .values()
        .map(|records| records.len() as u64)
        .sum();
    let imported = of("import", "JobsFinished");
    assert_eq!(imported.len(), 1, "{lines:?}");
    assert_eq!(imported[0]["JobsFinished"], 1);
    assert_eq!(imported[0]["Records"], records, "{}", imported[0]);
    assert_eq!(
        imported[0]["Bytes"],
        fixture_archive("complex").len(),
        "{}",
        imported[0]
    );
    assert_eq!(imported[0]["ProjectId"], id);
    assert!(imported[0]["JobDuration"].as_u64().is_some());
    let exported = of("export", "JobsFinished");
    assert_eq!(exported.len(), 1, "{lines:?}");
    assert_eq!(exported[0]["Records"], job.processed);
    assert_eq!(exported[0]["Bytes"], archive.len(), "{}", exported[0]);
    assert_eq!(exported[0]["JobId"], job.id);
}

/// A big export spread over the worker's invocations: the export's message
/// plans two slices, each slice's message (every message delivered twice at
/// once, as SQS may) writes one part of the archive's multipart upload, the
/// last queues the export again, which adds the trailer and completes it.
/// The download is one archive of three parts with every upload intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliced_export_through_the_lambda_functions() {
    let (app, clients, names) = setup().await;
    let settings = shared::Settings {
        export_slice_bytes: 11 << 19,
        ..(*app.settings).clone()
    };
    let app = shared_aws::app(&clients, &names, settings);
    let queue_url = names.queue_url.clone();
    let root = app.users.user_by_username("root").await.unwrap().unwrap();
    let (one, two) = (noise(6 << 20, 1), noise(6 << 20, 2));
    let archive = e2e::tar_gz(&[
        ("VERSION", b"0.2.4"),
        ("tree/project.json", b"{\"description\":\"noise\"}"),
        (
            "tree/project/issues.ndjson",
            b"{\"iid\":1,\"title\":\"one\"}\n",
        ),
        ("uploads/aa/one.bin", &one),
        ("uploads/bb/two.bin", &two),
    ]);
    let (project, _) = e2e::stores::start_import(&app, &root, "sliced", archive).await;
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    let id = project.id;

    let (status, _, _) = call(&app, &SCHEDULE, "POST", &format!("/projects/{id}/export")).await;
    assert_eq!(status, 202);
    // The export's message, its two slices', and the export's again (once
    // or more: each copy of the last slice may queue it).
    let mut delivered = 0;
    for _ in 0..10 {
        match deliver_twice_at_once(&app, &clients, &queue_url).await {
            0 => break,
            count => delivered += count,
        }
    }
    assert!(delivered >= 4, "{delivered} messages");

    let (status, _, exported) = call(&app, &STATUS, "GET", &format!("/projects/{id}/export")).await;
    assert_eq!(status, 200);
    assert_eq!(exported["export_status"], "finished", "{exported}");
    let (_, download) = followed_download(&app, &format!("/projects/{id}/export/download")).await;
    // S3 names an object completed from N parts by an ETag ending in -N.
    let etag = download.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.ends_with("-3\""), "{etag}");
    let archive = download.bytes().await.unwrap();
    assert_eq!(read_archive(&archive).relations["issues"].len(), 1);
    assert_eq!(archive_entry(&archive, "uploads/aa/one.bin"), Some(one));
    assert_eq!(archive_entry(&archive, "uploads/bb/two.bin"), Some(two));
    // Only the archive is left: the plan and the slices' records went.
    let left = app
        .blobs
        .list(&shared::service::exports_prefix(id))
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_failed_message_is_reported() {
    let (app, clients, names) = setup().await;
    let queue_url = names.queue_url.clone();
    let (content_type, body) = multipart(&[("path", "p")], &fixture_archive("complex"));
    let (status, _, project) = invoke(
        &app,
        &IMPORT,
        api_gateway_event(
            "POST",
            "/api/v4/projects/import",
            Some(&content_type),
            Some(&body),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    let id = project["id"].as_u64().unwrap();
    // The generation its first run wrote (`Job::generation`).
    let generation = format!("{}.1", project["correlation_id"].as_str().unwrap());

    // The records of a relation vanish from under the store's manifest: the export of this
    // project cannot be built and must be retried, while an import beside it
    // in the same batch goes through.
    clients
        .s3
        .delete_object()
        .bucket(&names.bucket)
        .key(shared::keys::content_chunk_key(
            id,
            &generation,
            "issues",
            0,
            Some(1),
        ))
        .send()
        .await
        .unwrap();
    let (status, _, _) = call(&app, &SCHEDULE, "POST", &format!("/projects/{id}/export")).await;
    assert_eq!(status, 202);
    let (content_type, body) = multipart(&[("path", "q")], &fixture_archive("complex"));
    let (status, _, _) = invoke(
        &app,
        &IMPORT,
        api_gateway_event(
            "POST",
            "/api/v4/projects/import",
            Some(&content_type),
            Some(&body),
        ),
    )
    .await;
    assert_eq!(status, 201);

    let (event, _) = sqs_event_from_queue(&clients, &queue_url).await;
    assert_eq!(event.records.len(), 2);
    let export_id = event
        .records
        .iter()
        .find(|r| r.body.as_deref().unwrap().contains("\"export\""))
        .and_then(|r| r.message_id.clone())
        .unwrap();
    let response = shared_aws::lambda::handle_sqs_event(&app, event, None).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, vec![export_id]);
    let (_, _, export) = call(&app, &STATUS, "GET", &format!("/projects/{id}/export")).await;
    assert_eq!(
        export["export_status"], "started",
        "retried later, never finished with a short archive"
    );
    assert!(app
        .blobs
        .list(&shared::service::exports_prefix(id))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_routes_answer_like_the_local_server() {
    let (app, _, _) = setup().await;
    let mut event = api_gateway_event("GET", "/api/v4/projects/1/export", None, None);
    event["headers"]["private-token"] = json!("wrong");
    let (status, _, body) = invoke(&app, &STATUS, event).await;
    assert_eq!(
        (status, body),
        (401, json!({"message": "401 Unauthorized"}))
    );
    let (status, _, body) = call(&app, &STATUS, "GET", "/projects/42/export").await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "404 Project Not Found"}))
    );
    let (status, _, body) = call(&app, &DOWNLOAD, "GET", "/projects/42/import").await;
    assert_eq!((status, body), (404, json!({"error": "404 Not Found"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relations_export_through_the_lambda_functions() {
    let (app, clients, names) = setup().await;
    let queue_url = names.queue_url.clone();
    // Small batches, so that the fixture's relations span several.
    let mut settings = (*app.settings).clone();
    settings.relation_batch_records = 5;
    let metrics = std::sync::Arc::new(shared::metrics::Recorded::default());
    let app = App {
        settings: std::sync::Arc::new(settings),
        metrics: shared::metrics::Metrics::new("test-stack", metrics.clone()),
        ..app
    };

    let (content_type, body) = multipart(&[("path", "rel")], &fixture_archive("complex"));
    let (status, _, project) = invoke(
        &app,
        &IMPORT,
        api_gateway_event(
            "POST",
            "/api/v4/projects/import",
            Some(&content_type),
            Some(&body),
        ),
    )
    .await;
    assert_eq!(status, 201);
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    let id = project["id"].as_u64().unwrap();

    let mut event = api_gateway_event(
        "POST",
        &format!("/api/v4/projects/{id}/export_relations"),
        None,
        None,
    );
    event["rawQueryString"] = json!("batched=true");
    let (status, _, _) = invoke(&app, &SCHEDULE, event).await;
    assert_eq!(status, 202);
    // Every message delivered twice: nothing is counted or written twice.
    while deliver_twice(&app, &clients, &queue_url).await > 0 {}

    let (status, _, statuses) = call(
        &app,
        &STATUS,
        "GET",
        &format!("/projects/{id}/export_relations/status"),
    )
    .await;
    assert_eq!(status, 200);
    let statuses = statuses.as_array().unwrap().clone();
    assert!(statuses.iter().all(|e| e["status"] == 1), "{statuses:?}");
    let expected = fixture_relations("complex");
    for entry in &statuses {
        let relation = entry["relation"].as_str().unwrap();
        // `self` and the file relations are never batched.
        if relation == "self" || shared::relations::is_file_relation(relation) {
            assert_eq!(entry["batched"], false, "{entry}");
            continue;
        }
        assert_eq!(entry["batched"], true);
        let total = entry["total_objects_count"].as_u64().unwrap();
        assert_eq!(
            entry["exported_objects_count"].as_u64(),
            Some(total),
            "{entry}"
        );
        assert_eq!(
            entry["batches_count"].as_u64(),
            Some(total.div_ceil(5)),
            "{entry}"
        );
        let mut records = Vec::new();
        for n in 1..=total.div_ceil(5) {
            let mut event = api_gateway_event(
                "GET",
                &format!("/api/v4/projects/{id}/export_relations/download"),
                None,
                None,
            );
            event["rawQueryString"] =
                json!(format!("relation={relation}&batched=true&batch_number={n}"));
            let (_, file) = followed(&app, event).await;
            records.extend(e2e::ndjson(&e2e::gunzip(&file.bytes().await.unwrap())));
        }
        assert_eq!(
            records,
            expected.get(relation).cloned().unwrap_or_default(),
            "{relation}"
        );
    }

    // The fan-out and the run's end, each measured once.
    let parts = app.jobs.relation_export_parts(id).await.unwrap();
    let sent: Vec<_> = shared::service::relation_export::sent_in_order(&parts).collect();
    let lines: Vec<Value> = metrics
        .lines()
        .into_iter()
        .filter(|line| line["Kind"] == "relation_export")
        .collect();
    let queued: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("RelationPartsQueued").is_some())
        .collect();
    assert_eq!(queued.len(), 1, "{lines:?}");
    assert_eq!(queued[0]["RelationPartsQueued"], sent.len(), "{lines:?}");
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("JobsFinished").is_some())
        .collect();
    assert_eq!(finished.len(), 1, "{lines:?}");
    let exported: u64 = sent.iter().map(|part| part.exported).sum();
    assert_eq!(finished[0]["Records"], exported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relation_import_through_the_lambda_functions() {
    let (app, clients, names) = setup().await;
    let queue_url = names.queue_url.clone();
    let halved = fixture_without_half("complex", &["issues"]);
    let (content_type, body) = multipart(&[("path", "gaps")], &halved);
    let import = api_gateway_event(
        "POST",
        "/api/v4/projects/import",
        Some(&content_type),
        Some(&body),
    );
    let (status, _, project) = invoke(&app, &IMPORT, import).await;
    assert_eq!(status, 201);
    let id = project["id"].as_u64().unwrap();
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());

    let (content_type, body) = multipart(
        &[("path", "root/gaps"), ("relation", "issues")],
        &fixture_archive("complex"),
    );
    let request = api_gateway_event(
        "POST",
        "/api/v4/projects/import-relation",
        Some(&content_type),
        Some(&body),
    );
    let (status, _, tracker) = invoke(&app, &IMPORT, request).await;
    assert_eq!(status, 201, "{tracker}");
    assert_eq!(tracker["status"], "created");
    // Delivered twice: the relation still gains each record once.
    assert_eq!(deliver_twice(&app, &clients, &queue_url).await, 1);

    let (status, _, list) = call(
        &app,
        &STATUS,
        "GET",
        &format!("/projects/{id}/relation-imports"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["id"], tracker["id"]);
    assert_eq!(list[0]["status"], "finished", "{list}");
    assert_eq!(list[0]["imported_objects_count"], 6, "{list}");

    assert_eq!(
        call(&app, &SCHEDULE, "POST", &format!("/projects/{id}/export"))
            .await
            .0,
        202
    );
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    let job = app
        .jobs
        .latest_finished_job(id, JobKind::Export)
        .await
        .unwrap()
        .expect("a finished export");
    let mut archive = Vec::new();
    let mut stream = app
        .blobs
        .get(job.archive_key.as_deref().unwrap())
        .await
        .unwrap();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        archive.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        read_archive(&archive).relations,
        fixture_relations("complex")
    );
}

/// A scheduled event as EventBridge delivers it for a rule's tick.
fn scheduled_event(time: &str) -> aws_lambda_events::event::eventbridge::EventBridgeEvent {
    serde_json::from_value(json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": time,
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/scheduled-exports"],
        "detail": {}
    }))
    .expect("an EventBridge event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_exports_through_the_eventbridge_function() {
    let (app, clients, names) = setup().await;
    let queue_url = names.queue_url.clone();
    let (content_type, body) = multipart(&[("path", "nightly")], &fixture_archive("complex"));
    let import = api_gateway_event(
        "POST",
        "/api/v4/projects/import",
        Some(&content_type),
        Some(&body),
    );
    let (_, _, project) = invoke(&app, &IMPORT, import).await;
    let id = project["id"].as_u64().unwrap();
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());

    let opt_in = api_gateway_event(
        "PUT",
        &format!("/api/v4/projects/{id}/export_schedule"),
        Some("application/x-www-form-urlencoded"),
        Some(b"keep=2"),
    );
    let (status, _, schedule) = invoke(&app, &SCHEDULE, opt_in).await;
    assert_eq!(status, 200, "{schedule}");

    // One tick delivered twice schedules one export.
    let tick = "2026-11-25T03:00:00Z";
    let first = shared_aws::lambda::handle_scheduled_event(&app, scheduled_event(tick))
        .await
        .unwrap();
    let again = shared_aws::lambda::handle_scheduled_event(&app, scheduled_event(tick))
        .await
        .unwrap();
    assert_eq!(first, json!({"scheduled": 1, "skipped": 0}));
    assert_eq!(again, json!({"scheduled": 0, "skipped": 1}));
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    for tick in ["2026-11-26T03:00:00Z", "2026-11-27T03:00:00Z"] {
        shared_aws::lambda::handle_scheduled_event(&app, scheduled_event(tick))
            .await
            .unwrap();
        assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    }

    // Three ticks, two kept.
    let stored = app
        .blobs
        .list(&shared::service::exports_prefix(id))
        .await
        .unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    let (status, _, schedule) = call(
        &app,
        &STATUS,
        "GET",
        &format!("/projects/{id}/export_schedule"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(schedule["last_scheduled_at"], "2026-11-27T03:00:00.000Z");
    let archives = schedule["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 2, "{schedule}");
    let job = archives[1]["id"].as_str().unwrap();
    assert!(job.ends_with(&format!("-{}", 1795662000)), "{job}");
    let (_, file) = followed_download(
        &app,
        &format!("/projects/{id}/export_schedule/archives/{job}/download"),
    )
    .await;
    let archive = file.bytes().await.unwrap();
    assert_eq!(
        read_archive(&archive).relations,
        fixture_relations("complex")
    );
}

/// The body S3 sends to the queue when an object lands.
fn s3_event_body(bucket: &str, key: &str) -> String {
    json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T14:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "uploaded-imports",
            "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
            "object": {"key": key, "size": 1024, "sequencer": "0055AED6DCD90281E5"}
        }
    }]})
    .to_string()
}

/// `POST /projects/remote-import-s3` of `key` in `bucket` (on moto, in
/// us-east-1) as project `path`; the status and answer.
async fn remote_import_s3(
    app: &App,
    bucket: &str,
    key: &str,
    access_key_id: &str,
    path: &str,
) -> (u16, Value) {
    let body = serde_urlencoded::to_string([
        ("region", "us-east-1"),
        ("bucket_name", bucket),
        ("file_key", key),
        ("access_key_id", access_key_id),
        ("secret_access_key", "testing"),
        ("path", path),
    ])
    .unwrap();
    let request = api_gateway_event(
        "POST",
        "/api/v4/projects/remote-import-s3",
        Some("application/x-www-form-urlencoded"),
        Some(body.as_bytes()),
    );
    let (status, _, answer) = invoke(app, &IMPORT, request).await;
    (status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_and_s3_imports_on_aws() {
    let (app, clients, names) = setup().await;
    let queue_url = names.queue_url.clone();

    // import/upload-url: a presigned PUT to S3, then S3's event on the queue.
    let form = api_gateway_event(
        "POST",
        "/api/v4/projects/import/upload-url",
        Some("application/x-www-form-urlencoded"),
        Some(b"path=uploaded"),
    );
    let (status, _, authorized) = invoke(&app, &IMPORT, form).await;
    assert_eq!(status, 201, "{authorized}");
    let id = authorized["id"].as_u64().unwrap();
    let url = authorized["upload"]["url"].as_str().unwrap();
    assert!(url.contains("X-Amz-Signature"), "{url}");
    let put = reqwest::Client::new()
        .put(url)
        .body(fixture_archive("complex"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let key = format!(
        "imports/{}/archive.tar.gz",
        authorized["correlation_id"].as_str().unwrap()
    );
    clients
        .sqs
        .send_message()
        .queue_url(&queue_url)
        .message_body(s3_event_body(&names.bucket, &key))
        .send()
        .await
        .unwrap();
    // The event starts the import, once even when S3 sends it twice; the
    // worker runs it, once even when SQS delivers it twice.
    assert_eq!(deliver_twice(&app, &clients, &queue_url).await, 1);
    assert_eq!(deliver_twice(&app, &clients, &queue_url).await, 1);
    let (left, _) = sqs_event_from_queue(&clients, &queue_url).await;
    assert!(left.records.is_empty(), "{:?}", left.records);
    let (_, _, imported) = call(&app, &STATUS, "GET", &format!("/projects/{id}/import")).await;
    assert_eq!(imported["import_status"], "finished", "{imported}");

    // remote-import-s3: someone else's bucket, fetched through a presigned GET.
    let source = format!("source-{}", names.bucket);
    clients
        .s3
        .create_bucket()
        .bucket(&source)
        .send()
        .await
        .unwrap();
    clients
        .s3
        .put_object()
        .bucket(&source)
        .key("exports/complex export.tar.gz")
        .content_type("application/gzip")
        .body(fixture_archive("complex").into())
        .send()
        .await
        .unwrap();
    let (status, created) = remote_import_s3(
        &app,
        &source,
        "exports/complex export.tar.gz",
        "testing",
        "from-s3",
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(run_worker_once(&app, &clients, &queue_url).await.is_empty());
    let id = created["id"].as_u64().unwrap();
    let (_, _, imported) = call(&app, &STATUS, "GET", &format!("/projects/{id}/import")).await;
    assert_eq!(imported["import_status"], "finished", "{imported}");

    // Checked before anything is created, as GitLab's RemoteFileS3 does
    // (lib/import/gitlab_projects/file_acquisition_strategies/remote_file_s3.rb):
    // an object that is not there, and one of the wrong content type, are a
    // `400` at once, which never shows the credential.
    let (status, answer) = remote_import_s3(
        &app,
        &source,
        "exports/missing.tar.gz",
        "AKIDSECRETLOOKING",
        "missing-from-s3",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        answer,
        json!({"message": format!("File not found 'exports/missing.tar.gz' in '{source}'")})
    );
    clients
        .s3
        .put_object()
        .bucket(&source)
        .key("notes.txt")
        .content_type("text/plain")
        .body(b"not an archive".to_vec().into())
        .send()
        .await
        .unwrap();
    let (status, answer) = remote_import_s3(
        &app,
        &source,
        "notes.txt",
        "AKIDSECRETLOOKING",
        "text-from-s3",
    )
    .await;
    assert_eq!(status, 400);
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("Content type 'text/plain' not allowed."),
        "{message}"
    );
    for path in ["missing-from-s3", "text-from-s3"] {
        let (status, _, _) = call(&app, &STATUS, "GET", &format!("/projects/root%2F{path}")).await;
        assert_eq!(status, 404, "{path}");
    }
}

/// The functions take the administrator's token from the stack's secret
/// (as `app_from_env` does with `ROOT_TOKEN_SECRET_ARN`), and refuse to
/// start, saying why, when the secret is missing or holds no usable token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_token_is_read_from_its_secret() {
    let (app, clients, names) = moto::app().await;
    let secret = |name: String, value: &'static str| {
        let clients = clients.clone();
        async move {
            let created = clients
                .secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .send()
                .await
                .unwrap();
            created.arn().unwrap().to_owned()
        }
    };
    let arn = secret(format!("{}-root-token", names.table), TOKEN).await;
    let token = shared_aws::lambda::read_root_token(&clients, &arn)
        .await
        .unwrap();
    auth::ensure_root(&app, Some(&token)).await.unwrap();
    let (status, _, user) = call(&app, &STATUS, "GET", "/user").await;
    assert_eq!(status, 200);
    assert_eq!(user["username"], "root");

    let missing = format!("{arn}-gone");
    let refused = shared_aws::lambda::read_root_token(&clients, &missing)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with(&format!(
            "cannot read the root token from secret {missing}: "
        )),
        "{refused}"
    );
    assert!(refused.contains("ResourceNotFoundException"), "{refused}");

    let short = secret(format!("{}-short", names.table), "too-short").await;
    let refused = shared_aws::lambda::read_root_token(&clients, &short)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.ends_with("the token is shorter than 20 characters"),
        "{refused}"
    );
}

/// A project migrated by direct transfer from a local server through the
/// Lambda functions: the migration and its job in DynamoDB, the staged
/// files and the archive in S3, the work on the queue (delivered twice).
/// Once it is done, no item of the table holds the source token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_by_direct_transfer_through_the_lambda_functions() {
    let (app, clients, names) = setup().await;
    let source = tokio::task::spawn_blocking(|| {
        let source = e2e::Server::start();
        let imported = source.import_and_wait(
            e2e::ROOT_TOKEN,
            fixture_archive("complex"),
            &[("path", "origin")],
        );
        assert_eq!(imported["import_status"], "finished");
        source
    })
    .await
    .unwrap();
    let body = json!({
        "configuration": {"url": source.base, "access_token": e2e::ROOT_TOKEN},
        "entities": [{
            "source_type": "project_entity",
            "source_full_path": "root/origin",
            "destination_slug": "migrated",
            "destination_namespace": "root",
        }],
    });
    let body = serde_json::to_vec(&body).unwrap();
    let (status, _, created) = invoke(
        &app,
        &SCHEDULE,
        api_gateway_event(
            "POST",
            "/api/v4/bulk_imports",
            Some("application/json"),
            Some(&body),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().unwrap();
    // The entity's job, then one message per file of the source's export
    // (each its own invocation), then the job again: each delivered twice,
    // the files' messages twice at the same moment.
    assert_eq!(deliver_twice(&app, &clients, &names.queue_url).await, 1);
    // One file's message is lost.
    let lost = clients
        .sqs
        .receive_message()
        .queue_url(&names.queue_url)
        .send()
        .await
        .unwrap();
    let lost = &lost.messages()[0];
    assert!(lost.body().unwrap().contains("direct_transfer_part"));
    clients
        .sqs
        .delete_message()
        .queue_url(&names.queue_url)
        .receipt_handle(lost.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();
    let drain = || async {
        let mut messages = 0;
        loop {
            let delivered = deliver_twice_at_once(&app, &clients, &names.queue_url).await;
            if delivered == 0 {
                return messages;
            }
            messages += delivered;
        }
    };
    let messages = drain().await + 1;
    // The relations but members, `self`, the file relations, and the
    // members (read from the members API).
    let files = fixture_relations("complex").len() - 1 + 1 + 4 + 1;
    assert_eq!(messages, files, "one message per file");
    let (_, _, waiting) = call(&app, &STATUS, "GET", &format!("/bulk_imports/{id}")).await;
    assert_eq!(waiting["status"], "started");
    // The stale-job sweep finds the job without progress: the job, queued
    // again, queues the missing file again.
    let later = shared::domain::now() + chrono::Duration::hours(1);
    let swept =
        shared::worker::sweep::sweep_stale_jobs(&app, later, shared::worker::sweep::STALE_AFTER)
            .await
            .unwrap();
    assert_eq!(swept.requeued, 1);
    assert!(
        drain().await >= 2,
        "the job, the lost file and the job again"
    );

    let (status, _, migration) = call(&app, &STATUS, "GET", &format!("/bulk_imports/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(migration["status"], "finished", "{migration}");
    let (_, _, entities) = call(
        &app,
        &STATUS,
        "GET",
        &format!("/bulk_imports/{id}/entities"),
    )
    .await;
    let entity = &entities[0];
    assert_eq!(entity["status"], "finished");
    let expected = fixture_relations("complex");
    for (relation, records) in &expected {
        if relation == "project_members" {
            continue;
        }
        assert_eq!(
            entity["stats"][relation]["imported"],
            records.len(),
            "{relation}"
        );
    }

    let items = clients
        .dynamodb
        .scan()
        .table_name(&names.table)
        .send()
        .await
        .unwrap();
    let table = format!("{:?}", items.items());
    assert!(
        !table.contains(e2e::ROOT_TOKEN),
        "the source token is dropped"
    );
    tokio::task::spawn_blocking(move || drop(source))
        .await
        .unwrap();
}
