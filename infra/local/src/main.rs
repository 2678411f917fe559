//! `local`: the GitLab-compatible export/import API on one machine, with no
//! AWS. Same routes and workers as the Lambda functions, on the embedded
//! adapters (or, built with `--features aws`, on the AWS adapters).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use shared::archive::Limits;
use shared::auth::{self, RootToken};
use shared::embedded::EmbeddedBackend;
use shared::{App, Settings};

#[derive(Parser)]
#[command(
    name = "local",
    version,
    about = "GitLab-compatible project export/import API, served locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the whole API and run the workers in this process.
    Serve(Box<ServeArgs>),
    /// Manage users (run while the server is stopped).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage personal access tokens (run while the server is stopped).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Give the space of deleted projects back to the disk (run while the
    /// server is stopped): the database file reuses freed space but never
    /// shrinks by itself.
    Compact(DataDir),
}

#[derive(Args)]
struct DataDir {
    /// Where all state lives; it survives restarts.
    #[arg(long, default_value = "./.data", env = "LOCAL_DATA_DIR")]
    data_dir: PathBuf,
}

/// Which adapters the server runs on.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// Embedded storage in the data directory, in-process queue: no AWS.
    Embedded,
    /// DynamoDB, S3 and SQS named by TABLE_NAME, BUCKET_NAME and QUEUE_URL
    /// (with `AWS_ENDPOINT_URL` for an emulator); needs `--features aws`.
    Aws,
}

#[derive(Args)]
struct ServeArgs {
    /// The storage the server runs on.
    #[arg(long, value_enum, default_value = "embedded", env = "LOCAL_BACKEND")]
    backend: Backend,
    /// With `--backend aws`: create the table, bucket and a queue named
    /// after the table first (for emulators).
    #[arg(long)]
    provision: bool,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", env = "LOCAL_BIND")]
    bind: SocketAddr,
    #[command(flatten)]
    data: DataDir,
    /// Queue workers running in this process (0 leaves the queue untouched).
    #[arg(long, default_value_t = 2, env = "LOCAL_WORKERS")]
    workers: usize,
    /// The base URL clients reach this server at (default: http://<bind>).
    #[arg(long, env = "LOCAL_PUBLIC_URL")]
    public_url: Option<String>,
    /// Lifetime of signed download URLs, in seconds.
    #[arg(long, default_value_t = 300, env = "DOWNLOAD_URL_TTL_SECONDS")]
    download_ttl: u64,
    /// Answer downloads with `302` to a signed URL (as on AWS) instead of
    /// streaming the file (as GitLab does with local storage).
    #[arg(long, env = "DOWNLOAD_REDIRECT")]
    download_redirect: bool,
    /// Largest accepted import upload, in bytes.
    #[arg(long, default_value_t = Settings::default().max_upload_bytes, env = "MAX_UPLOAD_BYTES")]
    max_upload_bytes: u64,
    #[command(flatten)]
    limits: LimitArgs,
    /// Full exports a user may schedule per minute (GitLab: 6; relations
    /// exports are not limited); 0 turns the limit off.
    #[arg(long, default_value_t = Settings::default().export_rate_limit, env = "EXPORT_RATE_LIMIT_PER_MINUTE")]
    export_rate_limit: u32,
    /// Full export downloads a user may start per minute in one namespace
    /// (GitLab: 1); 0 turns the limit off.
    #[arg(long, default_value_t = Settings::default().download_rate_limit, env = "DOWNLOAD_RATE_LIMIT_PER_MINUTE")]
    download_rate_limit: u32,
    /// Records per batch of a batched relations export.
    #[arg(long, default_value_t = Settings::default().relation_batch_records, env = "RELATION_BATCH_SIZE")]
    relation_batch_size: u64,
    /// Messages one relations export has on the queue at a time: the rest
    /// follow as parts finish, so other projects' work is never behind a
    /// whole export.
    #[arg(long, default_value_t = Settings::default().relation_export_window, env = "RELATION_EXPORT_WINDOW")]
    relation_export_window: usize,
    /// Bytes of tar stream one worker compresses of a big export: an
    /// archive past 1.5 times this is written in slices by the workers, as
    /// parts of one file.
    /// Unset: 256 MiB on a machine with more cores than one export's
    /// compression uses (4), else no slicing: on fewer cores the slices
    /// only share them, no faster than one stream and with more memory.
    #[arg(long, env = "EXPORT_SLICE_BYTES")]
    export_slice_bytes: Option<u64>,
    /// Seconds between ticks of the export schedule (projects opt in with
    /// PUT /projects/:id/export_schedule); ticks fall on multiples of it
    /// since the epoch. 0 turns the schedule off.
    #[arg(long, default_value_t = 86_400, env = "EXPORT_SCHEDULE_EVERY_SECONDS")]
    export_schedule_every: u64,
    /// Let remote imports and exports sent to a URL reach this machine and
    /// private networks (off: such URLs are refused with a 400).
    #[arg(long, env = "ALLOW_LOCAL_REQUESTS")]
    allow_local_requests: bool,
    /// Build links from X-Forwarded-Host/-Proto: only behind a proxy that
    /// sets them (otherwise any client could choose the links others see).
    #[arg(long, env = "TRUST_FORWARDED_HEADERS")]
    trust_forwarded_headers: bool,
    /// Seconds a worker works on an import before it stops at a safe point
    /// and continues in a fresh message, as the Lambda worker does before
    /// its deadline (unset: until the import is done).
    #[arg(long, env = "INVOCATION_BUDGET_SECONDS")]
    invocation_budget: Option<u64>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "LOG_JSON")]
    log_json: bool,
    /// How old unowned leftovers (of a killed process) must be before the
    /// leftovers sweep deletes them (unset: longer than any job runs).
    #[arg(long, env = "LEFTOVERS_GRACE_SECONDS")]
    leftovers_grace: Option<u64>,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// How long a remote (a migration's source, a remote import's URL, an
/// export's upload target) may make a worker wait.
#[derive(Args)]
struct RemoteArgs {
    /// Seconds one metadata request to a remote may take in all (a status,
    /// a project lookup), its body included.
    #[arg(long, default_value_t = 30, env = "REMOTE_METADATA_TIMEOUT_SECONDS")]
    remote_metadata_timeout: u64,
    /// Bytes a second a remote file must average after its grace period.
    #[arg(long, default_value_t = 64 * 1024, env = "REMOTE_MIN_RATE")]
    remote_min_rate: u64,
    /// Seconds at the start of a remote file not held to the rate.
    #[arg(long, default_value_t = 60, env = "REMOTE_GRACE_SECONDS")]
    remote_grace: u64,
}

impl RemoteArgs {
    fn limits(&self) -> shared::remote::bounded::RemoteLimits {
        shared::remote::bounded::RemoteLimits {
            metadata_deadline: Duration::from_secs(self.remote_metadata_timeout.max(1)),
            file_pace: shared::remote::bounded::Pace {
                grace: Duration::from_secs(self.remote_grace),
                rate: self.remote_min_rate.max(1),
            },
        }
    }
}

/// What one client may hold of the server: a client that sends a request
/// slowly, or never finishes it, is cut off instead of holding a
/// connection forever, and no address holds more than its share.
#[derive(Args)]
struct ConnectionArgs {
    /// Seconds a client has to send a request's headers.
    #[arg(long, default_value_t = 30, env = "HEADER_READ_TIMEOUT_SECONDS")]
    header_read_timeout: u64,
    /// Seconds a request body (an upload) may stall without a byte.
    #[arg(long, default_value_t = 60, env = "BODY_IDLE_TIMEOUT_SECONDS")]
    body_idle_timeout: u64,
    /// Bytes a second a request body must average over each window
    /// (`--body-rate-window`) after its first, or it is cut with `408`.
    #[arg(long, default_value_t = 1024, env = "BODY_MIN_RATE")]
    body_min_rate: u64,
    /// Seconds over which a body's rate is averaged.
    #[arg(long, default_value_t = 30, env = "BODY_RATE_WINDOW_SECONDS")]
    body_rate_window: u64,
    /// Connections served at once; more wait to be accepted. Unset: what
    /// the open-file limit (raised to its hard limit at start) leaves room
    /// for, at most 16,384.
    #[arg(long, env = "MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Connections one client address may hold at once; past it a new one
    /// is answered `503` and closed (nginx's `limit_conn`). Unset: a
    /// sixteenth of `--max-connections`, at least 8.
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
}

/// The connection pool's size and one address's share of it.
struct ConnectionLimits {
    total: usize,
    per_address: usize,
    header_timeout: Duration,
}

impl ConnectionArgs {
    /// Raises the open-file limit, and sizes the pool to it.
    fn limits(&self) -> ConnectionLimits {
        // Descriptors besides connections: the store, blobs being read and
        // written, outgoing requests.
        const RESERVED_FILES: u64 = 512;
        const MOST_CONNECTIONS: u64 = 16_384;
        let open_files = match shared::runtime::raise_open_file_limit() {
            Ok((before, after)) => {
                if after > before {
                    tracing::info!(before, after, "raised the open-file limit");
                }
                after
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the open-file limit");
                1024
            }
        };
        let fitting = open_files
            .saturating_sub(RESERVED_FILES)
            .clamp(64, MOST_CONNECTIONS);
        let total = self.max_connections.unwrap_or(fitting as usize).max(1);
        let per_address = self
            .max_connections_per_address
            .unwrap_or((total / 16).max(8))
            .clamp(1, total);
        tracing::info!(
            connections = total,
            per_address,
            open_files,
            "connection limits"
        );
        ConnectionLimits {
            total,
            per_address,
            header_timeout: Duration::from_secs(self.header_read_timeout.max(1)),
        }
    }

    fn body_rate(&self) -> shared::stream::MinRate {
        let window = self.body_rate_window.max(1);
        shared::stream::MinRate {
            window: Duration::from_secs(window),
            min_bytes: self.body_min_rate.saturating_mul(window),
        }
    }
}

/// What an imported archive may cost (a violating import fails cleanly).
#[derive(Args)]
struct LimitArgs {
    /// Bytes after decompression, all entries together.
    #[arg(long, default_value_t = Limits::default().max_uncompressed_bytes, env = "MAX_UNCOMPRESSED_BYTES")]
    max_uncompressed_bytes: u64,
    /// Entries in the archive.
    #[arg(long, default_value_t = Limits::default().max_entries, env = "MAX_ARCHIVE_ENTRIES")]
    max_entries: u64,
    /// Bytes of one record (one NDJSON line).
    #[arg(long, default_value_t = Limits::default().max_record_bytes, env = "MAX_RECORD_BYTES")]
    max_record_bytes: usize,
    /// Nesting depth of one record.
    #[arg(long, default_value_t = Limits::default().max_json_depth, env = "MAX_JSON_DEPTH")]
    max_json_depth: usize,
    /// Relation files in the archive (each is a message of every relations export).
    #[arg(long, default_value_t = Limits::default().max_relations, env = "MAX_RELATIONS")]
    max_relations: usize,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            max_uncompressed_bytes: self.max_uncompressed_bytes,
            max_entries: self.max_entries,
            max_record_bytes: self.max_record_bytes,
            max_json_depth: self.max_json_depth,
            max_relations: self.max_relations,
            ..Limits::default()
        }
    }
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (with its namespace) and print a new token for it.
    Create {
        username: String,
        /// Display name (default: the username).
        #[arg(long)]
        name: Option<String>,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        data: DataDir,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new personal access token for an existing user.
    Create {
        username: String,
        /// Token name.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Expiry date, YYYY-MM-DD.
        #[arg(long)]
        expires_at: Option<chrono::NaiveDate>,
        #[command(flatten)]
        data: DataDir,
    },
}

fn open_offline(data: &DataDir) -> Result<App, shared::Error> {
    let backend = EmbeddedBackend::open(&data.data_dir, "http://127.0.0.1")?;
    Ok(App::embedded(&backend, Settings::default()))
}

fn main() {
    shared::runtime::block_on(run());
}

async fn run() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::User(UserCommand::Create {
            username,
            name,
            admin,
            data,
        }) => create_user(&data, &username, name.as_deref(), admin).await,
        Command::Token(TokenCommand::Create {
            username,
            name,
            expires_at,
            data,
        }) => create_token(&data, &username, &name, expires_at).await,
        Command::Compact(data) => compact(&data),
    };
    if let Err(err) = result {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn compact(data: &DataDir) -> Result<(), shared::Error> {
    let (before, after) = shared::embedded::compact(&data.data_dir)?;
    println!(
        "compacted {}: {before} bytes before, {after} after",
        data.data_dir.join("state.redb").display()
    );
    Ok(())
}

async fn create_user(
    data: &DataDir,
    username: &str,
    name: Option<&str>,
    admin: bool,
) -> Result<(), shared::Error> {
    let app = open_offline(data)?;
    let user = app
        .users
        .create_user(username, name.unwrap_or(username), admin)
        .await?;
    let (_, token) = auth::issue_token(&app, &user, "cli", None).await?;
    println!(
        "created user {} (id {}); token: {token}",
        user.username, user.id
    );
    Ok(())
}

async fn create_token(
    data: &DataDir,
    username: &str,
    name: &str,
    expires_at: Option<chrono::NaiveDate>,
) -> Result<(), shared::Error> {
    let app = open_offline(data)?;
    let user = app
        .users
        .user_by_username(username)
        .await?
        .ok_or_else(|| shared::Error::not_found("User"))?;
    let expires_at = expires_at.map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    let (_, token) = auth::issue_token(&app, &user, name, expires_at).await?;
    println!("{token}");
    Ok(())
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Slices spread an export over workers; one machine's workers share its
/// cores, which one export's compression already fills on up to four.
fn default_export_slice_bytes() -> u64 {
    if shared::archive::one_encoder_takes_every_core() {
        u64::MAX
    } else {
        Settings::default().export_slice_bytes
    }
}

async fn serve(args: ServeArgs) -> Result<(), shared::Error> {
    init_logging(args.log_json);
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    let address = listener.local_addr()?;
    let public_url = args
        .public_url
        .unwrap_or_else(|| format!("http://{address}"));
    let settings = Settings {
        download_ttl: Duration::from_secs(args.download_ttl),
        download_redirect: args.download_redirect || args.backend == Backend::Aws,
        max_upload_bytes: args.max_upload_bytes,
        relation_batch_records: args.relation_batch_size.max(1),
        relation_export_window: args.relation_export_window.max(1),
        export_slice_bytes: args
            .export_slice_bytes
            .unwrap_or_else(default_export_slice_bytes)
            .max(1),
        export_rate_limit: args.export_rate_limit,
        download_rate_limit: args.download_rate_limit,
        limits: args.limits.limits(),
        s3_endpoint: Settings::s3_endpoint_from_env(),
        allow_local_requests: args.allow_local_requests,
        trust_forwarded_headers: args.trust_forwarded_headers,
        invocation_budget: args.invocation_budget.map(Duration::from_secs),
        remote: args.remote.limits(),
        ..Settings::default()
    };
    let app = match args.backend {
        Backend::Embedded => {
            let backend = EmbeddedBackend::open(&args.data.data_dir, &public_url)?;
            let app = App::embedded(&backend, settings);
            for _ in 0..args.workers {
                let queue = backend.queue.clone();
                tokio::spawn(shared::worker::poll_loop(app.clone(), move || {
                    let queue = queue.clone();
                    async move { queue.wait_for_message(Duration::from_millis(500)).await }
                }));
            }
            app
        }
        Backend::Aws => {
            let app = aws_app(settings, args.provision).await?;
            for _ in 0..args.workers {
                tokio::spawn(shared::worker::poll_loop(app.clone(), || {
                    tokio::time::sleep(Duration::from_millis(200))
                }));
            }
            app
        }
    };

    let configured = std::env::var("LOCAL_ROOT_TOKEN").ok();
    let root_token = auth::ensure_root(&app, configured.as_deref()).await?;

    if args.export_schedule_every > 0 {
        tokio::spawn(schedule_timer(app.clone(), args.export_schedule_every));
    }
    let leftovers_grace = args
        .leftovers_grace
        .map(Duration::from_secs)
        .unwrap_or_else(|| shared::worker::leftovers::grace(&app));
    // Before the first request: what a killed process left goes first.
    sweep_leftovers(&app, leftovers_grace).await;
    tokio::spawn(sweep_timer(app.clone(), leftovers_grace));

    println!("GitLab export/import API listening on {public_url}/api/v4");
    if args.backend == Backend::Embedded {
        println!("data directory: {}", args.data.data_dir.display());
    }
    match root_token {
        RootToken::Generated(token) => println!(
            "root token (shown once, keep it): {token}\n  try: curl -H \"PRIVATE-TOKEN: {token}\" {public_url}/api/v4/user"
        ),
        RootToken::Configured => println!("authenticate with PRIVATE-TOKEN: $LOCAL_ROOT_TOKEN"),
        RootToken::Existing => println!(
            "authenticate with the root token printed at first start, or make one: local token create root"
        ),
    }
    println!("ready");

    let router =
        shared::http::with_min_body_rate(shared::http::router(app), args.connections.body_rate())
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                Duration::from_secs(args.connections.body_idle_timeout),
            ));
    serve_connections(listener, router, &args.connections.limits()).await
}

#[cfg(feature = "aws")]
async fn aws_app(settings: Settings, provision: bool) -> Result<App, shared::Error> {
    use shared_aws::{self as aws, AwsClients, AwsNames};
    let clients = AwsClients::from_env().await;
    let names = if provision {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| shared::Error::Internal(format!("--provision needs {name}")))
        };
        let (table, bucket) = (var("TABLE_NAME")?, var("BUCKET_NAME")?);
        let queue = format!("{table}-queue");
        let queue_url = aws::provision(&clients, &table, &bucket, &queue).await?;
        AwsNames {
            table,
            bucket,
            queue_url,
        }
    } else {
        AwsNames::from_env()?
    };
    Ok(aws::app(&clients, &names, settings))
}

#[cfg(not(feature = "aws"))]
async fn aws_app(_settings: Settings, _provision: bool) -> Result<App, shared::Error> {
    Err(shared::Error::Internal(
        "this build has no AWS adapters: cargo build --release -p local --features aws".into(),
    ))
}

/// Accepts connections, at most `limits.total` at once and
/// `limits.per_address` from one address, each with a deadline for its
/// request headers, until the process is asked to stop.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: &ConnectionLimits,
) -> Result<(), shared::Error> {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.total));
    let by_address = AddressShares::new(limits.per_address);
    let header_timeout = limits.header_timeout;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(shared::Error::internal)?,
            () = &mut shutdown => return Ok(()),
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let Some(share) = by_address.enter(peer.ip()) else {
            // Said in one write if the socket takes it, never waited on.
            let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            drop(share);
            drop(slot);
        });
    }
}

/// nginx's `limit_conn` answer, before any request was read.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: application/json\r\nContent-Length: 69\r\nRetry-After: 1\r\nConnection: close\r\n\r\n\
{\"message\":\"503 Service Unavailable: too many connections from here\"}";

/// Connections open per client address.
#[derive(Clone)]
struct AddressShares {
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    per_address: usize,
}

/// One connection's place in its address's share; given back on drop.
struct AddressShare {
    shares: AddressShares,
    address: std::net::IpAddr,
}

impl AddressShares {
    fn new(per_address: usize) -> Self {
        AddressShares {
            open: Default::default(),
            per_address,
        }
    }

    fn enter(&self, address: std::net::IpAddr) -> Option<AddressShare> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(address).or_default();
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        Some(AddressShare {
            shares: self.clone(),
            address,
        })
    }
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut open = self.shares.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// The local stand-in for the EventBridge schedule: a tick at every multiple
/// of `every` seconds, so a restart within a period repeats the same tick
/// (which schedules nothing twice).
async fn schedule_timer(app: App, every: u64) {
    loop {
        let now = shared::domain::now().timestamp_millis();
        let period = (every * 1000) as i64;
        let next = (now / period + 1) * period;
        tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
        let Some(tick) = chrono::DateTime::from_timestamp_millis(next) else {
            continue;
        };
        if let Err(err) = shared::service::schedule::run_tick(&app, tick).await {
            tracing::error!(error = %err, "export schedule tick failed");
        }
    }
}

/// The stale-job sweep every five minutes, the leftovers sweep every hour
/// (on AWS: their own schedule rules).
async fn sweep_timer(app: App, leftovers_grace: Duration) {
    use shared::worker::sweep;
    for round in 1u64.. {
        tokio::time::sleep(Duration::from_secs(300)).await;
        let now = shared::domain::now();
        if let Err(err) = sweep::sweep_stale_jobs(&app, now, sweep::STALE_AFTER).await {
            tracing::error!(error = %err, "stale-job sweep failed");
        }
        if round % 12 == 0 {
            sweep_leftovers(&app, leftovers_grace).await;
        }
    }
}

async fn sweep_leftovers(app: &App, grace: Duration) {
    let now = shared::domain::now();
    if let Err(err) = shared::worker::leftovers::sweep_leftovers(app, now, grace).await {
        tracing::error!(error = %err, "leftovers sweep failed");
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
