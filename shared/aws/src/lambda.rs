//! Lambda entry points. Each function's `main` is one call into here: build
//! the AWS adapters from the environment once, then serve its routes (HTTP
//! functions) or its queue (the worker).

use std::time::Duration;

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use axum::Router;

use crate::{AwsClients, AwsNames};
use shared::worker::{self, Outcome};
use shared::{auth, http, App, Settings};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Settings from the function's environment, defaults otherwise.
pub fn settings_from_env() -> Settings {
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let defaults = Settings::default();
    Settings {
        download_ttl: number("DOWNLOAD_URL_TTL_SECONDS")
            .map(Duration::from_secs)
            .unwrap_or(defaults.download_ttl),
        max_upload_bytes: number("MAX_UPLOAD_BYTES").unwrap_or(defaults.max_upload_bytes),
        export_rate_limit: number("EXPORT_RATE_LIMIT_PER_MINUTE")
            .map(|n| n.min(u32::MAX.into()) as u32)
            .unwrap_or(defaults.export_rate_limit),
        download_rate_limit: number("DOWNLOAD_RATE_LIMIT_PER_MINUTE")
            .map(|n| n.min(u32::MAX.into()) as u32)
            .unwrap_or(defaults.download_rate_limit),
        relation_batch_records: number("RELATION_BATCH_SIZE")
            .filter(|n| *n > 0)
            .unwrap_or(defaults.relation_batch_records),
        relation_export_window: number("RELATION_EXPORT_WINDOW")
            .filter(|n| *n > 0)
            .map(|n| n as usize)
            .unwrap_or(defaults.relation_export_window),
        export_slice_bytes: number("EXPORT_SLICE_BYTES")
            .filter(|n| *n > 0)
            .unwrap_or(defaults.export_slice_bytes),
        limits: shared::archive::Limits {
            max_relations: number("MAX_RELATIONS")
                .map(|n| n as usize)
                .unwrap_or(defaults.limits.max_relations),
            ..defaults.limits.clone()
        },
        export_retention: number("EXPORT_RETENTION_DAYS")
            .map(|days| Duration::from_secs(days * 24 * 3600))
            .unwrap_or(defaults.export_retention),
        s3_endpoint: Settings::s3_endpoint_from_env(),
        allow_local_requests: std::env::var("ALLOW_LOCAL_REQUESTS").is_ok_and(|v| v == "true"),
        // API Gateway is in front of every function and sets them.
        trust_forwarded_headers: std::env::var("TRUST_FORWARDED_HEADERS")
            .map_or(true, |v| v != "false"),
        invocation_budget: number("INVOCATION_BUDGET_SECONDS").map(Duration::from_secs),
        ..defaults
    }
}

/// JSON log lines, as CloudWatch wants them.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .without_time()
        .try_init();
}

/// The application on the AWS resources named in the environment.
pub async fn app_from_env() -> Result<App, Error> {
    let clients = AwsClients::from_env().await;
    let names = AwsNames::from_env()?;
    let mut app = crate::app(&clients, &names, settings_from_env());
    // Job metrics as EMF lines in the log: CloudWatch extracts them.
    let namespace = std::env::var("METRICS_NAMESPACE")
        .unwrap_or_else(|_| shared::metrics::DEFAULT_NAMESPACE.to_owned());
    app.metrics =
        shared::metrics::Metrics::new(&namespace, std::sync::Arc::new(shared::metrics::Stdout));
    // The administrator's token is in the stack's secret, never in the
    // environment: anyone who may read a function's configuration would
    // read it there.
    if let Ok(secret) = std::env::var("ROOT_TOKEN_SECRET_ARN") {
        let token = read_root_token(&clients, &secret).await?;
        auth::ensure_root(&app, Some(&token)).await?;
    }
    Ok(app)
}

/// The root token from its secret (Secrets Manager), read at cold start. A
/// function whose secret is missing, empty or unreadable does not start:
/// it would answer every administrator request `401` with no hint why.
pub async fn read_root_token(clients: &AwsClients, secret: &str) -> Result<String, Error> {
    let read = clients
        .secrets
        .get_secret_value()
        .secret_id(secret)
        .send()
        .await;
    let refused = |reason: String| -> Error {
        tracing::error!(secret, reason, "cannot read the root token: not starting");
        format!("cannot read the root token from secret {secret}: {reason}").into()
    };
    match read {
        Ok(value) => match value.secret_string().map(str::trim) {
            Some(token) if token.len() >= auth::MIN_ROOT_TOKEN_LEN => Ok(token.to_owned()),
            Some(_) => Err(refused(format!(
                "the token is shorter than {} characters",
                auth::MIN_ROOT_TOKEN_LEN
            ))),
            None => Err(refused("the secret has no string value".into())),
        },
        Err(err) => Err(refused(
            aws_smithy_types::error::display::DisplayErrorContext(&err).to_string(),
        )),
    }
}

/// Serves one function's routes behind API Gateway.
pub async fn run_http(routes: Router<App>) -> Result<(), Error> {
    init_logging();
    let app = app_from_env().await?;
    lambda_http::run(http::function_router(routes, app)).await
}

/// Consumes SQS batches: each message handled once, failures reported per
/// message so SQS redelivers only those.
pub async fn run_worker() -> Result<(), Error> {
    init_logging();
    let app = app_from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| {
            let app = app.clone();
            let ends = event.context.deadline();
            async move { Ok::<_, Error>(handle_sqs_event(&app, event.payload, Some(ends)).await) }
        },
    ))
    .await
}

/// The object keys of an S3 event notification (S3 sends them to the work
/// queue when an upload lands under `imports/`); none for anything else.
pub fn uploaded_keys(body: &str) -> Vec<String> {
    let Ok(event) = serde_json::from_str::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let Some(records) = event.get("Records").and_then(|r| r.as_array()) else {
        return Vec::new();
    };
    records
        .iter()
        .filter(|r| {
            r.get("eventName")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.starts_with("ObjectCreated:"))
        })
        .filter_map(|r| r.pointer("/s3/object/key")?.as_str())
        // S3 event keys are URL-encoded, with `+` for spaces.
        .map(|key| {
            percent_encoding::percent_decode_str(&key.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Triggered by the EventBridge schedule: one tick of scheduled exports.
pub async fn run_scheduled_exports() -> Result<(), Error> {
    init_logging();
    let app = app_from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| {
            let app = app.clone();
            async move {
                // The sweep rules send `{"sweep": true}` and
                // `{"leftovers": true}`; the export schedule's rule sends
                // its Scheduled Event.
                let flag = |name: &str| event.payload.get(name).and_then(|v| v.as_bool());
                if flag("sweep") == Some(true) {
                    return handle_sweep(&app).await;
                }
                if flag("leftovers") == Some(true) {
                    return handle_leftovers(&app).await;
                }
                let scheduled: EventBridgeEvent = serde_json::from_value(event.payload)?;
                handle_scheduled_event(&app, scheduled).await
            }
        },
    ))
    .await
}

/// The stale-job sweep (every few minutes, from its own schedule rule).
pub async fn handle_sweep(app: &App) -> Result<serde_json::Value, Error> {
    use shared::worker::sweep;
    let summary = sweep::sweep_stale_jobs(app, shared::domain::now(), sweep::STALE_AFTER).await?;
    Ok(serde_json::json!({
        "requeued": summary.requeued,
        "failed": summary.failed,
    }))
}

/// The leftovers sweep (daily, from its own schedule rule).
pub async fn handle_leftovers(app: &App) -> Result<serde_json::Value, Error> {
    use shared::worker::leftovers;
    let grace = leftovers::grace(app);
    let summary = leftovers::sweep_leftovers(app, shared::domain::now(), grace).await?;
    Ok(serde_json::json!({
        "generations": summary.generations,
        "folders": summary.folders,
    }))
}

/// One EventBridge "Scheduled Event": its `time` is the tick, so a repeated
/// delivery of the same tick schedules nothing twice.
pub async fn handle_scheduled_event(
    app: &App,
    event: EventBridgeEvent,
) -> Result<serde_json::Value, Error> {
    let tick = event.time.unwrap_or_else(shared::domain::now);
    let summary = shared::service::schedule::run_tick(app, tick).await?;
    Ok(serde_json::json!({
        "scheduled": summary.scheduled,
        "skipped": summary.skipped,
    }))
}

/// One SQS batch: the failed messages' ids, for `ReportBatchItemFailures`.
/// Long work stops before the invocation `ends` and continues in a fresh
/// message.
pub async fn handle_sqs_event(
    app: &App,
    event: SqsEvent,
    ends: Option<std::time::SystemTime>,
) -> SqsBatchResponse {
    let deadline = worker::Deadline::for_invocation(app, ends);
    let mut failures = Vec::new();
    for record in event.records {
        let id = record.message_id.clone().unwrap_or_default();
        let body = record.body.as_deref().unwrap_or_default();
        let Some(message) = crate::parse_message(body) else {
            let keys = uploaded_keys(body);
            if keys.is_empty() {
                tracing::warn!(message_id = id, "dropping a message that is not ours");
            }
            for key in keys {
                if let Err(err) = shared::service::upload_landed(app, &key).await {
                    tracing::warn!(key, error = %err, "cannot start the uploaded import");
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id.clone();
                    failures.push(failure);
                }
            }
            continue;
        };
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        if worker::attempt_until(app, &message, receive_count, deadline).await == Outcome::Retry {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failures.push(failure);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures;
    response
}
