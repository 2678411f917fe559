//! Looking into the stores from a test, and driving the workers as the
//! queue would: what the stores hold, the queue worked until empty.

use std::collections::BTreeSet;
use std::time::Duration;

use shared::domain::{Job, Message, Project, User};
use shared::service::ImportRequest;
use shared::worker::{self, Outcome};
use shared::{service, stream, App, Settings};
use shared_aws::{self as aws, AwsClients, AwsNames};

/// An AWS app's DynamoDB table, to list what it holds.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    pub clients: &'a AwsClients,
    pub name: &'a str,
}

impl<'a> Table<'a> {
    pub fn of(clients: &'a AwsClients, names: &'a AwsNames) -> Self {
        Table {
            clients,
            name: &names.table,
        }
    }
}

/// What a store holds: every blob key, and on AWS every table item's keys
/// (users' counters and rate windows aside: they are not the project's).
pub async fn holdings(app: &App, table: Option<Table<'_>>) -> BTreeSet<String> {
    let mut held: BTreeSet<String> = app
        .blobs
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|blob| format!("blob {}", blob.key))
        .collect();
    if let Some(Table {
        clients,
        name: table,
    }) = table
    {
        let mut start = None;
        loop {
            let page = clients
                .dynamodb
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let text = |name: &str| item[name].as_s().unwrap().clone();
                let (pk, sk) = (text("pk"), text("sk"));
                if !pk.starts_with("COUNTER#") && !pk.starts_with("RATE#") {
                    held.insert(format!("item {pk} {sk}"));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
    }
    held
}

/// Works the queue until it is empty (each message delivered twice at
/// once, as SQS may); the messages worked, in order.
pub async fn work_queue(app: &App) -> Vec<Message> {
    let mut worked = Vec::new();
    for _ in 0..500 {
        let deliveries = app
            .queue
            .receive(10, Duration::from_secs(30))
            .await
            .unwrap();
        if deliveries.is_empty() {
            return worked;
        }
        for delivery in deliveries {
            let message = &delivery.message;
            let (a, b) = tokio::join!(
                worker::attempt(app, message, delivery.receive_count),
                worker::attempt(app, message, delivery.receive_count)
            );
            assert_eq!((a, b), (Outcome::Done, Outcome::Done), "{message:?}");
            app.queue.ack(&delivery.receipt).await.unwrap();
            worked.push(delivery.message);
        }
    }
    panic!("the queue never emptied");
}

pub async fn upload(app: &App, archive: Vec<u8>) -> String {
    let key = service::upload_key(&shared::domain::new_id());
    app.blobs
        .put(&key, stream::from_bytes(archive))
        .await
        .unwrap();
    key
}

/// A new import of `archive` at `path`, uploaded and queued.
pub async fn start_import(app: &App, user: &User, path: &str, archive: Vec<u8>) -> (Project, Job) {
    let key = upload(app, archive).await;
    let request = ImportRequest {
        path: path.into(),
        namespace: None,
        name: None,
        overwrite: false,
        overrides: Vec::new(),
    };
    service::start_import(app, user, &request, &key)
        .await
        .unwrap()
}

/// Settings under which every invocation stops at its first safe point
/// and continues in a fresh message.
pub fn cut_short(settings: &Settings) -> Settings {
    Settings {
        invocation_budget: Some(Duration::ZERO),
        ..settings.clone()
    }
}

/// An embedded application in a temporary directory, with `settings`
/// made from the defaults.
pub fn embedded_app_with(settings: impl Fn(&Settings) -> Settings) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend = shared::embedded::EmbeddedBackend::open(dir.path(), "http://127.0.0.1:9")
        .expect("embedded backend");
    let app = App::embedded(&backend, settings(&Settings::default()));
    (app, dir)
}

/// An AWS application on fresh moto resources, with `settings` made from
/// the tests' moto defaults, and the table to look into.
pub async fn moto_app_with(
    settings: impl Fn(&Settings) -> Settings,
) -> (App, AwsClients, AwsNames) {
    let (app, clients, names) = crate::moto::app().await;
    let app = aws::app(&clients, &names, settings(&app.settings));
    (app, clients, names)
}
