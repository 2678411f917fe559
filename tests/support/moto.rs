//! A real moto server (DynamoDB, S3, SQS on one endpoint) for the AWS
//! adapters, one per test process, with unique resource names per test.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shared::{App, Settings};
use shared_aws::{self as aws, AwsClients, AwsNames};

struct MotoProcess {
    child: Child,
    endpoint: String,
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn moto_binary() -> PathBuf {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    assert!(
        venv.exists(),
        "moto_server not found at {}: run `bash infra/test.sh` (it installs moto[server] into .venv) \
         or set MOTO_SERVER",
        venv.display()
    );
    venv
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The endpoint of this process's moto server, started on first use.
pub fn endpoint() -> &'static str {
    static MOTO: OnceLock<MotoProcess> = OnceLock::new();
    &MOTO
        .get_or_init(|| {
            let port = free_port();
            // Statics are never dropped: a watchdog stops moto when this
            // test process is gone, however it ended.
            let watchdog = format!(
                r#""$0" -H 127.0.0.1 -p {port} & moto=$!
                while kill -0 {parent} 2>/dev/null && kill -0 $moto 2>/dev/null; do sleep 1; done
                kill $moto 2>/dev/null"#,
                parent = std::process::id()
            );
            let child = Command::new("sh")
                .arg("-c")
                .arg(watchdog)
                .arg(moto_binary())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "moto_server did not start on port {port}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            MotoProcess {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            }
        })
        .endpoint
}

/// SDK clients pointed at moto, with dummy credentials.
pub async fn clients() -> AwsClients {
    clients_at(endpoint()).await
}

/// SDK clients pointed at `endpoint` (moto, or a proxy in front of it).
pub async fn clients_at(endpoint: &str) -> AwsClients {
    let config = shared_aws::config_loader()
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await;
    AwsClients::new(&config)
}

/// Unique table, bucket and queue for one test, created on moto.
pub async fn resources(clients: &AwsClients) -> AwsNames {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let unique = format!(
        "t{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        Instant::now().elapsed().subsec_nanos()
    );
    let (table, bucket, queue) = (
        format!("jobs-{unique}"),
        format!("blobs-{unique}"),
        format!("work-{unique}"),
    );
    let queue_url = aws::provision(clients, &table, &bucket, &queue)
        .await
        .expect("resources on moto");
    AwsNames {
        table,
        bucket,
        queue_url,
    }
}

/// The application on fresh AWS resources on moto.
pub async fn app() -> (App, AwsClients, AwsNames) {
    let clients = clients().await;
    let names = resources(&clients).await;
    let settings = Settings {
        s3_endpoint: Some(endpoint().to_owned()),
        // remote-import-s3 fetches from moto, on 127.0.0.1.
        allow_local_requests: true,
        // As on Lambda: API Gateway sets the forwarded headers.
        trust_forwarded_headers: shared_aws::lambda::settings_from_env().trust_forwarded_headers,
        ..Settings::default()
    };
    let app = aws::app(&clients, &names, settings);
    (app, clients, names)
}

/// `bench/aws_proxy.py` in front of moto, answering `fault_rate` of the
/// calls as AWS does under load (throttling, `503 SlowDown`, a dropped
/// connection), chosen by a generator seeded with `seed`.
pub struct FaultyProxy {
    child: Child,
    pub endpoint: String,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FaultyProxy {
    pub fn start(fault_rate: f64, seed: u64) -> Self {
        use std::io::BufRead;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/aws_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--target", endpoint()])
            .args(["--fault-rate", &fault_rate.to_string()])
            .args(["--seed", &seed.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs bench/aws_proxy.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the proxy says where it listens");
        let endpoint = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected proxy output: {line:?}"))
            .to_owned();
        FaultyProxy { child, endpoint }
    }

    /// Faults injected so far, by service and kind.
    pub async fn faults(&self) -> std::collections::BTreeMap<String, u64> {
        let counts: serde_json::Value = reqwest::get(format!("{}/__counts", self.endpoint))
            .await
            .and_then(|r| r.error_for_status())
            .expect("the proxy answers its counts")
            .json()
            .await
            .expect("JSON counts");
        serde_json::from_value(counts["faults"].clone()).expect("faults by kind")
    }
}
