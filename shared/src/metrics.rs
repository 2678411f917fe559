//! What the service did, for an operator's dashboard and alarms: jobs
//! scheduled, finished and failed per kind, how long they took, the records
//! and bytes they moved, and the relation parts a relations export fanned
//! out. Each event is one line in CloudWatch's embedded metric format (EMF):
//! on Lambda printed to the function's log, where CloudWatch turns it into
//! metrics with no API call; locally the same line goes to the log.

use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::domain::{Job, JobKind, JobStatus};

/// Where metric lines go.
pub trait MetricsSink: Send + Sync {
    fn publish(&self, line: String);
}

/// The function's standard output: CloudWatch Logs extracts EMF lines there.
pub struct Stdout;

impl MetricsSink for Stdout {
    fn publish(&self, line: String) {
        use std::io::Write;
        // One write per line, so concurrent log lines never split it.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(format!("{line}\n").as_bytes());
        let _ = out.flush();
    }
}

/// The process's log (the local server).
pub struct Logged;

impl MetricsSink for Logged {
    fn publish(&self, line: String) {
        tracing::info!(target: "metrics", "{line}");
    }
}

/// Kept in memory: what a test reads back.
#[derive(Default)]
pub struct Recorded {
    lines: Mutex<Vec<String>>,
}

impl Recorded {
    pub fn lines(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl MetricsSink for Recorded {
    fn publish(&self, line: String) {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
}

/// The namespace the stack's dashboard reads when none is configured.
pub const DEFAULT_NAMESPACE: &str = "GitLabExportImport";

#[derive(Clone)]
pub struct Metrics {
    namespace: String,
    sink: Arc<dyn MetricsSink>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metrics({})", self.namespace)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_NAMESPACE, Arc::new(Logged))
    }
}

enum Unit {
    Count,
    Milliseconds,
    Bytes,
}

impl Unit {
    fn as_str(&self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

impl Metrics {
    pub fn new(namespace: &str, sink: Arc<dyn MetricsSink>) -> Self {
        Metrics {
            namespace: namespace.to_owned(),
            sink,
        }
    }

    /// A job was created and queued.
    pub fn job_scheduled(&self, job: &Job) {
        self.publish(
            job.kind,
            &[("JobsScheduled", Unit::Count, 1)],
            &[
                ("JobId", json!(job.id)),
                ("ProjectId", json!(job.project_id)),
            ],
        );
    }

    /// A job ended (`finished` or `failed`): how long it took from its
    /// request, the records it moved and, where known, the archive's bytes.
    pub fn job_ended(&self, job: &Job, bytes: Option<u64>) {
        let outcome = match job.status {
            JobStatus::Finished => "JobsFinished",
            JobStatus::Failed => "JobsFailed",
            _ => return,
        };
        let duration = (job.updated_at - job.created_at).num_milliseconds().max(0) as u64;
        let mut values = vec![
            (outcome, Unit::Count, 1),
            ("JobDuration", Unit::Milliseconds, duration),
            ("Records", Unit::Count, job.processed),
        ];
        if let Some(bytes) = bytes {
            values.push(("Bytes", Unit::Bytes, bytes));
        }
        self.publish(
            job.kind,
            &values,
            &[
                ("JobId", json!(job.id)),
                ("ProjectId", json!(job.project_id)),
            ],
        );
    }

    /// A relations export queued `parts` messages (one per relation or batch).
    pub fn relation_parts_queued(&self, job: &Job, parts: u64) {
        self.publish(
            job.kind,
            &[("RelationPartsQueued", Unit::Count, parts)],
            &[
                ("JobId", json!(job.id)),
                ("ProjectId", json!(job.project_id)),
            ],
        );
    }

    fn publish(&self, kind: JobKind, values: &[(&str, Unit, u64)], properties: &[(&str, Value)]) {
        let definitions: Vec<Value> = values
            .iter()
            .map(|(name, unit, _)| json!({"Name": name, "Unit": unit.as_str()}))
            .collect();
        let mut line = Map::new();
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": crate::domain::now().timestamp_millis(),
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Kind"]],
                    "Metrics": definitions,
                }],
            }),
        );
        line.insert("Kind".into(), json!(kind.as_str()));
        for (name, _, value) in values {
            line.insert((*name).into(), json!(value));
        }
        for (name, value) in properties {
            line.insert((*name).into(), value.clone());
        }
        self.sink.publish(Value::Object(line).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_embedded_metric_format() {
        let recorded = Arc::new(Recorded::default());
        let metrics = Metrics::new("Stack", recorded.clone());
        let mut job = Job::new(JobKind::Import, 7, 1);
        job.status = JobStatus::Finished;
        job.processed = 42;
        job.updated_at = job.created_at + chrono::Duration::milliseconds(1500);
        metrics.job_ended(&job, Some(2048));
        job.status = JobStatus::Started;
        metrics.job_ended(&job, None);

        let lines = recorded.lines();
        assert_eq!(lines.len(), 1, "only an ended job is measured");
        let line = &lines[0];
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Stack");
        assert_eq!(directive["Dimensions"], json!([["Kind"]]));
        // Every metric the directive names is a number at the top level.
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_u64(), "{name}");
        }
        assert_eq!(line["Kind"], "import");
        assert_eq!(line["JobsFinished"], 1);
        assert_eq!(line["JobDuration"], 1500);
        assert_eq!(line["Records"], 42);
        assert_eq!(line["Bytes"], 2048);
        assert!(line["_aws"]["Timestamp"].is_i64());
    }
}
