#!/usr/bin/env python3
"""Every AWS call of import, full export, batched relations export and
relation import, counted on moto, priced, and held against AWS's limits.

    python3 bench/aws_model.py [--issues 10000,50000,200000] [--bin PATH] [--project-gb 100] [--out bench/RESULTS.md]

It runs the `local` server on the AWS adapters (`--backend aws`, the same
routes and workers the Lambda functions run) against a moto server, with a
counting proxy (`aws_proxy.py`) between the two. For each synthetic project
(bench/run.py's generator) it runs, each phase on the counters reset:

  import            POST /projects/import (the archive, streamed to S3), the job
  export            POST /projects/:id/export, the job, the download
  relations export  POST /projects/:id/export_relations?batched=true, every
                    part, every relation and batch downloaded
  relation import   POST /projects/import-relation (issues of the same archive)
  migration         POST /bulk_imports from the server to itself (both sides
                    counted: the source's relations export and downloads, the
                    destination's staging and import)
  delete            DELETE /projects/:id, until the bucket holds nothing of it

The counted server runs two workers: in a migration from itself, one waits
for the source's relations export while the other builds it. Status polls
go to a second server on the same table, bucket and queue that
talks to moto directly, so that they are not counted as the job's calls.

Per phase it prints the calls per service and operation (items, bytes; for
DynamoDB the write and read units of the busiest partition key), their
cost at AWS's on-demand request prices, and a lower bound on the job's wall
time on AWS: the largest of (a) the calls taken one after another at a
typical latency, (b) the busiest partition key at DynamoDB's per-partition
limits, (c) the busiest S3 prefix at S3's per-prefix rates, (d) the CPU time
the server spent (as on one Lambda vCPU). The last line is one JSON object.

Then it extrapolates to `--project-gb` (100 GB of archive by default) along
a line through the smallest and largest sizes' counts (a fixed part per job,
a part per GB), checked against the sizes measured between them:
invocations, work and wall time, requests, cost, the busiest partition
key's and S3 prefix's rates against AWS's, and what bounds a project's size
instead.

`--out` puts the report into that file's `aws_model` section (bench/run.py
keeps the section when it rewrites the file). Standard library only, plus
moto (the test command's venv has it; MOTO_SERVER names its binary).
"""

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aws_proxy  # noqa: E402
import run as harness  # noqa: E402

ROOT = harness.ROOT
GB = 1e9
WORKER_TIMEOUT_S = 900  # template.yaml, WorkerFunction

# On-demand request prices, us-east-1, as AWS publishes them (2025; DynamoDB
# after the November 2024 reduction). Not re-checked here: no internet.
PRICES = {
    "dynamodb_wru": 0.625 / 1e6,
    "dynamodb_rru": 0.125 / 1e6,
    "s3_put": 0.005 / 1000,  # PUT, COPY, POST, LIST (multipart calls included)
    "s3_get": 0.0004 / 1000,  # GET, HEAD and the rest
    "sqs_request": 0.40 / 1e6,  # per 64 KB chunk of a request
}
PRICES_NOTE = ("us-east-1 on-demand, as published in 2025: DynamoDB $0.625 per million write and $0.125 per "
               "million read request units; S3 Standard $0.005 per 1,000 PUT/COPY/POST/LIST and $0.0004 per "
               "1,000 GET/HEAD, DELETE free; SQS $0.40 per million requests. Empty queue polls are not counted "
               "(on AWS the event source mapping's long polls).")
S3_PUT_CLASS = {"PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload", "ListObjectsV2",
                "CreateBucket", "PUT", "POST"}
S3_FREE = {"DeleteObject", "DeleteObjects", "AbortMultipartUpload"}

# Typical latencies in one region with warm connections, and one
# connection's throughput: what each call costs when calls follow each other.
LATENCY_S = {"dynamodb": 0.004, "dynamodb_batch": 0.008, "s3": 0.020, "s3_get": 0.010, "sqs": 0.006}
S3_BYTES_PER_S = 80e6
LATENCY_NOTE = ("calls one after another: DynamoDB 4 ms (8 ms for batches, transactions and queries), S3 20 ms "
                "per PUT/POST/LIST/DELETE and 10 ms to the first byte of a GET, plus bytes at 80 MB/s, SQS 6 ms")
# Work per worker invocation: its timeout less the margin it keeps to stop
# at a safe point and hand over (DEADLINE_MARGIN in shared/src/worker).
INVOCATION_WORK_S = WORKER_TIMEOUT_S - 60
# What one continuation adds (shared/src/worker/import.rs, `pause`, and the
# next run's claim): the checkpoint's PUT and the ranged GET that resumes,
# the job's pause, claim and generation claim, one SQS message.
CONTINUATION_CALLS = {"s3_put": 1, "s3_get": 1, "dynamodb_wcu": 4, "dynamodb_rcu": 3, "sqs": 1}
# AWS's documented limits.
PARTITION_WCU_PER_S = 1000
PARTITION_RCU_PER_S = 3000
PREFIX_PUTS_PER_S = 3500
PREFIX_GETS_PER_S = 5500


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_binary():
    for candidate in [os.environ.get("MOTO_SERVER"), os.path.join(ROOT, ".venv", "bin", "moto_server"),
                      shutil.which("moto_server")]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("moto_server not found: run `bash infra/test.sh` once (it installs it into .venv) "
             "or pip install 'moto[server]'")


class Moto:
    def __enter__(self):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen([moto_binary(), "-p", str(self.port)], stdout=self.log, stderr=self.log)
        self.url = "http://127.0.0.1:%d" % self.port
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise harness.PhaseError("moto did not start")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait()


def call_seconds(service, operation, sent, received):
    if service == "dynamodb":
        batch = operation in ("BatchWriteItem", "TransactWriteItems", "Query", "Scan")
        return LATENCY_S["dynamodb_batch" if batch else "dynamodb"]
    if service == "sqs":
        return LATENCY_S["sqs"]
    if operation in ("GetObject", "HeadObject"):
        return LATENCY_S["s3_get"] + received / S3_BYTES_PER_S
    return LATENCY_S["s3"] + (sent + received) / S3_BYTES_PER_S


def model(counts, cpu_seconds):
    """The phase's cost and wall-time bounds from its counted calls."""
    operations = counts["operations"]
    cost = 0.0
    s3_requests = dynamodb_items = sqs_messages = 0
    for name, figures in operations.items():
        service, operation = name.split(".", 1)
        if service == "dynamodb":
            cost += figures.get("wcu", 0) * PRICES["dynamodb_wru"] + figures.get("rcu", 0) * PRICES["dynamodb_rru"]
            if operation in ("PutItem", "UpdateItem", "BatchWriteItem", "TransactWriteItems"):
                dynamodb_items += figures.get("items", 0)
        elif service == "s3":
            s3_requests += figures["calls"]
            if operation in S3_FREE:
                continue
            cost += figures["calls"] * (PRICES["s3_put"] if operation in S3_PUT_CLASS else PRICES["s3_get"])
        elif service == "sqs" and operation != "ReceiveMessage(empty)":
            sqs_messages += figures.get("messages", 0) if operation.startswith("Send") else 0
            chunks = max(1, -(-figures.get("bytes_sent", 0) // 65536)) if operation.startswith("Send") else 0
            cost += max(figures["calls"], chunks) * PRICES["sqs_request"]
    calls = [c for c in counts["calls"] if c[1] != "ReceiveMessage(empty)"]
    sequential = sum(call_seconds(service, operation, sent, received)
                     for service, operation, sent, received, _, _ in calls)
    prefix_s = max([max(v.get("put", 0) / PREFIX_PUTS_PER_S, v.get("get", 0) / PREFIX_GETS_PER_S)
                    for v in counts["s3_by_prefix"].values()] or [0])
    bounds = {
        "sequential_calls_s": sequential,
        "partition_s": max(counts["wcu_max_pk"] / PARTITION_WCU_PER_S, counts["rcu_max_pk"] / PARTITION_RCU_PER_S),
        "prefix_s": prefix_s,
        "cpu_s": cpu_seconds,
    }
    return {
        "cost_usd": cost,
        "s3_requests": s3_requests,
        "dynamodb_items_written": dynamodb_items,
        "sqs_messages": sqs_messages,
        "bounds": bounds,
        "modeled_s": max(bounds.values()),
        "pessimistic_s": sequential + cpu_seconds,
    }


def download(server, path, destination=None):
    """GETs `path` following its redirect (a presigned S3 URL): bytes."""
    req = urllib.request.Request(server.base + path, headers={"PRIVATE-TOKEN": harness.TOKEN})
    size = 0
    try:
        with urllib.request.urlopen(req) as resp:
            out = open(destination, "wb") if destination else None
            while chunk := resp.read(1 << 20):
                size += len(chunk)
                if out:
                    out.write(chunk)
            if out:
                out.close()
    except urllib.error.HTTPError as err:
        raise harness.PhaseError("%s answered %d: %s" % (path, err.code, err.read()[:300])) from None
    return size


def wait_for(server, path, done, timeout=3 * 3600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = server.request("GET", path)
        verdict = done(answer)
        if verdict:
            return answer
        time.sleep(0.5)
    raise harness.PhaseError("%s did not finish in %d s" % (path, timeout))


def finished(field):
    def check(answer):
        if answer.get(field) == "failed":
            raise harness.PhaseError("failed: %s" % json.dumps(answer)[:1500])
        return answer.get(field) == "finished"
    return check


def bench_size(binary, issues, moto, work):
    archive, generated = harness.synthetic_archive(issues)
    proxy = aws_proxy.Proxy(moto.url)
    names = {"TABLE_NAME": "bench-%d-%s" % (issues, uuid.uuid4().hex[:8]), "BUCKET_NAME": "bench-%s" % uuid.uuid4().hex[:12]}
    aws_env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true", **names}
    counted_env = {**aws_env, "AWS_ENDPOINT_URL": proxy.url}
    direct_env = {**aws_env, "AWS_ENDPOINT_URL": moto.url,
                  "QUEUE_URL": "%s/123456789012/%s-queue" % (moto.url, names["TABLE_NAME"])}
    phases = {}
    worker_log, status_log = os.path.join(work, "worker-%d.log" % issues), os.path.join(work, "status-%d.log" % issues)
    with harness.Server(binary, None, worker_log, ["--backend", "aws", "--provision", "--workers", "2", "--allow-local-requests"], counted_env) as worker, \
            harness.Server(binary, None, status_log, ["--backend", "aws", "--workers", "0"], direct_env) as status:

        def phase(name, action):
            harness.progress("%d issues: %s" % (issues, name))
            proxy.counter.reset()
            cpu = worker.cpu_seconds()
            start = time.perf_counter()
            figures = action() or {}
            seconds = time.perf_counter() - start
            counts = proxy.counter.snapshot()
            phases[name] = {**figures, "seconds_on_moto": seconds, "counts": counts,
                            **model(counts, worker.cpu_seconds() - cpu)}

        project = {}

        def do_import():
            body, headers = harness.multipart_body({"path": "bench"}, archive)
            created = worker.request("POST", "/projects/import", body, headers)
            project["id"] = created["id"]
            answer = wait_for(status, "/projects/%d/import" % created["id"], finished("import_status"))
            harness.check_imported(answer, generated["records"])

        def do_export():
            pid = project["id"]
            worker.request("POST", "/projects/%d/export" % pid)
            wait_for(status, "/projects/%d/export" % pid, finished("export_status"))
            exported = os.path.join(work, "export-%d.tar.gz" % issues)
            size = download(worker, "/projects/%d/export/download" % pid, exported)
            content = harness.ndjson_of(exported)
            harness.check_records("export", generated["relations"], content["relations"])
            os.remove(exported)
            return {"archive_bytes": size}

        def do_relations_export():
            pid = project["id"]
            worker.request("POST", "/projects/%d/export_relations?batched=true" % pid)

            def all_done(entries):
                if any(e["status"] == -1 for e in entries):
                    raise harness.PhaseError("a relation failed: %s" % json.dumps(entries)[:1500])
                return entries and all(e["status"] == 1 for e in entries)

            entries = wait_for(status, "/projects/%d/export_relations/status" % pid, all_done)
            downloaded = files = 0
            for entry in entries:
                relation = entry["relation"]
                batches = entry.get("batches") or []
                if entry.get("batched"):
                    for batch in batches:
                        downloaded += download(worker, "/projects/%d/export_relations/download?relation=%s&batched=true&batch_number=%d"
                                               % (pid, relation, batch["batch_number"]))
                        files += 1
                else:
                    downloaded += download(worker, "/projects/%d/export_relations/download?relation=%s" % (pid, relation))
                    files += 1
            return {"files": files, "downloaded_bytes": downloaded}

        def do_relation_import():
            body, headers = harness.multipart_body({"path": "root/bench", "relation": "issues"}, archive)
            worker.request("POST", "/projects/import-relation", body, headers)

            def done(imports):
                if imports and imports[0].get("status") == "failed":
                    raise harness.PhaseError("relation import failed: %s" % json.dumps(imports[0])[:1500])
                return imports and imports[0].get("status") == "finished"

            wait_for(status, "/projects/%d/relation-imports" % project["id"], done)

        def do_migration():
            source = worker.base[: -len("/api/v4")] if worker.base.endswith("/api/v4") else worker.base
            body = json.dumps({
                "configuration": {"url": source, "access_token": harness.TOKEN},
                "entities": [{"source_type": "project_entity", "source_full_path": "root/bench",
                              "destination_slug": "bench-migrated", "destination_namespace": "root"}],
            }).encode()
            created = worker.request("POST", "/bulk_imports", body, {"Content-Type": "application/json"})

            def done(migration):
                if migration.get("status") in ("failed", "timeout", "canceled"):
                    entities = status.request("GET", "/bulk_imports/%d/entities" % created["id"])
                    raise harness.PhaseError("migration %s: %s" % (migration["status"], json.dumps(entities)[:1500]))
                return migration.get("status") == "finished"

            wait_for(status, "/bulk_imports/%d" % created["id"], done)
            entity = status.request("GET", "/bulk_imports/%d/entities" % created["id"])[0]
            migrated = status.request("GET", "/projects/%d/import" % entity["project_id"])
            harness.check_imported(migrated, generated["records"] - members_of(generated))
            status.request("DELETE", "/projects/%d" % entity["project_id"])

        def do_delete():
            pid = project["id"]
            worker.request("DELETE", "/projects/%d" % pid)
            # The deletion runs behind the answer: done once the bucket holds
            # nothing of the project (listed on moto directly, not counted).
            deadline = time.perf_counter() + 3600
            while time.perf_counter() < deadline:
                left = sum(bucket_keys(moto.url, names["BUCKET_NAME"], prefix % pid)
                           for prefix in ("projects/%d/", "exports/%d/"))
                if left == 0:
                    return {}
                time.sleep(0.5)
            raise harness.PhaseError("project %d not deleted after an hour" % pid)

        phase("import", do_import)
        phase("export", do_export)
        phase("relations export", do_relations_export)
        phase("relation import", do_relation_import)
        phase("migration", do_migration)
        phase("delete", do_delete)
    proxy.close()
    return {"issues": issues, "input": generated, "archive_bytes": os.path.getsize(archive), "phases": phases}


def members_of(generated):
    """Records a migration does not carry (members: see docs/api.md)."""
    return generated["relations"].get("project_members", 0)


# Phases whose work fans out over the workers (a message per slice, relation,
# batch or file); the others run their invocations one after another.
FAN_OUT = {"export", "relations export", "migration"}
WORKER_CONCURRENCY = 10  # template.yaml, WorkerMaxConcurrency's default
EXPORT_SLICE_BYTES = 256 * 1024 * 1024  # Settings::export_slice_bytes's default

METRICS = ("s3_requests", "dynamodb_items_written", "sqs_messages", "cost_usd", "work_s", "wcu_max_pk")


def figures(phase):
    return {"s3_requests": phase["s3_requests"], "dynamodb_items_written": phase["dynamodb_items_written"],
            "sqs_messages": phase["sqs_messages"], "cost_usd": phase["cost_usd"], "work_s": phase["pessimistic_s"],
            "wcu_max_pk": phase["counts"]["wcu_max_pk"]}


def fit(results, name):
    """Per metric, a fixed part and a part per GB of archive, through the
    smallest and the largest size measured: value = fixed + per_gb * GB."""
    small, large = results[0], results[-1]
    gb_small, gb_large = small["archive_bytes"] / GB, large["archive_bytes"] / GB
    a, b = figures(small["phases"][name]), figures(large["phases"][name])
    line = {}
    for metric in METRICS:
        per_gb = (b[metric] - a[metric]) / (gb_large - gb_small)
        line[metric] = (a[metric] - per_gb * gb_small, per_gb)
    return line


def at(line, gb):
    return {metric: max(0.0, fixed + per_gb * gb) for metric, (fixed, per_gb) in line.items()}


def extrapolate(results, project_gb):
    """`project_gb` of archive from a line through the smallest and largest
    sizes' counts (a fixed part and a part per GB); a size measured between
    them checks the line (predicted / measured, 1.00 when it holds)."""
    middle = results[1:-1]
    phases = {}
    for name, phase in results[-1]["phases"].items():
        line = fit(results, name)
        value = at(line, project_gb)
        work = value["work_s"]
        if name == "export":
            # The local server writes an export as one stream; on Lambda one
            # this big is cut into slices of tar, a message and an invocation
            # each, besides the one that plans them.
            tar_per_archive_byte = results[-1]["input"]["ndjson_bytes"] / results[-1]["archive_bytes"]
            slices = -(-int(project_gb * GB * tar_per_archive_byte) // EXPORT_SLICE_BYTES)
            value["sqs_messages"] = max(value["sqs_messages"], slices + 1)
        sequential_invocations = max(1, -(-int(work) // INVOCATION_WORK_S))
        continuations = sequential_invocations - 1 if name not in FAN_OUT else 0
        invocations = max(sequential_invocations, int(round(value["sqs_messages"])))
        extra_cost = continuations * (
            CONTINUATION_CALLS["s3_put"] * PRICES["s3_put"] + CONTINUATION_CALLS["s3_get"] * PRICES["s3_get"]
            + CONTINUATION_CALLS["dynamodb_wcu"] * PRICES["dynamodb_wru"]
            + CONTINUATION_CALLS["dynamodb_rcu"] * PRICES["dynamodb_rru"]
            + CONTINUATION_CALLS["sqs"] * PRICES["sqs_request"])
        wall = work / WORKER_CONCURRENCY if name in FAN_OUT else work
        # The busiest key's and prefix's rates at the largest size measured:
        # their units and the job's time both grow with the project.
        seconds = phase["pessimistic_s"] or 1e-9
        checks = {}
        for result in middle:
            predicted = at(line, result["archive_bytes"] / GB)
            measured = figures(result["phases"][name])
            checks[result["issues"]] = {m: (predicted[m] / measured[m]) if measured[m] else None for m in METRICS}
        phases[name] = {
            "work_s": work,
            "wall_s": wall,
            "invocations": invocations,
            "s3_requests": value["s3_requests"] + continuations * (CONTINUATION_CALLS["s3_put"] + CONTINUATION_CALLS["s3_get"]),
            "dynamodb_items_written": value["dynamodb_items_written"] + continuations * CONTINUATION_CALLS["dynamodb_wcu"],
            "sqs_messages": value["sqs_messages"] + continuations,
            "cost_usd": value["cost_usd"] + extra_cost,
            "busiest_key_wcu_per_s": phase["counts"]["wcu_max_pk"] / seconds,
            "busiest_prefix_requests_per_s": max([max(v.get("put", 0), v.get("get", 0)) / seconds
                                                  for v in phase["counts"]["s3_by_prefix"].values()] or [0]),
            "per_gb": {m: per_gb for m, (_, per_gb) in line.items()},
            "checks": checks,
        }
    return {"project_gb": project_gb, "sizes": [(r["issues"], r["archive_bytes"]) for r in results], "phases": phases}


def ratio(value):
    return "–" if value is None else "%.2f" % value


def duration(seconds):
    if seconds < 120:
        return "%.0f s" % seconds
    if seconds < 7200:
        return "%.0f min" % (seconds / 60)
    return "%.1f h" % (seconds / 3600)


def extrapolation_report(model):
    gb = model["project_gb"]
    sizes = ", ".join("%d issues (%.1f MB)" % (issues, size / 1e6) for issues, size in model["sizes"])
    out = ["## Extrapolated: a %d GB project" % gb, "",
           "An extrapolation, not a measurement. Each count is a line through the smallest and the largest size "
           "measured (%s): a fixed part per job and a part per GB of archive, taken to %d GB. Work is the "
           "pessimistic time (calls one after another plus CPU on one vCPU). A job takes as many worker invocations "
           "as its work at %d s each (the %d s timeout less the margin it stops in), or as its messages where it "
           "fans out; each continuation of a job that runs alone adds a checkpoint (%s). Wall time: the import, the "
           "relation import and the deletion run their invocations one after another, so their wall time is their "
           "work; an export's slices, a relations export's files and a migration's downloads fan out over the "
           "workers, so theirs is shown at %d workers (WorkerMaxConcurrency's default). The local server writes "
           "an export as one stream, so the export's messages are counted as Lambda would cut it: one per 256 MiB "
           "slice of tar (the largest size's tar bytes per archive byte), and one for its plan."
           % (sizes, gb, INVOCATION_WORK_S, WORKER_TIMEOUT_S, ", ".join("%s %d" % kv for kv in CONTINUATION_CALLS.items()),
              WORKER_CONCURRENCY), "",
           "| phase | work | wall time | invocations | S3 requests | DynamoDB items written | SQS messages | requests' cost | busiest key WCU/s (≤ %d) | busiest prefix req/s (≤ %d) |"
           % (PARTITION_WCU_PER_S, PREFIX_PUTS_PER_S),
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, p in model["phases"].items():
        out.append("| %s | %s | %s | %d | %.0f | %.0f | %.0f | $%.2f | %.0f | %.0f |" % (
            name, duration(p["work_s"]), duration(p["wall_s"]), p["invocations"], p["s3_requests"],
            p["dynamodb_items_written"], p["sqs_messages"], p["cost_usd"], p["busiest_key_wcu_per_s"],
            p["busiest_prefix_requests_per_s"]))
    checked = sorted({issues for p in model["phases"].values() for issues in p["checks"]})
    for issues in checked:
        out += ["", "The line, checked at %d issues (measured in the same run, not used to draw it): predicted / "
                "measured, 1.00 where the counts are linear in size." % issues, "",
                "| phase | S3 requests | DynamoDB items | SQS messages | cost | work | busiest key WCU |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, p in model["phases"].items():
            c = p["checks"][issues]
            out.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                name, ratio(c["s3_requests"]), ratio(c["dynamodb_items_written"]), ratio(c["sqs_messages"]),
                ratio(c["cost_usd"]), ratio(c["work_s"]), ratio(c["wcu_max_pk"])))
    worst_key = max(p["busiest_key_wcu_per_s"] for p in model["phases"].values())
    worst_prefix = max(p["busiest_prefix_requests_per_s"] for p in model["phases"].values())
    out += ["", "The busiest partition key takes at most %.0f WCU/s (%.0f %% of DynamoDB's %d) and the busiest S3 prefix "
            "%.0f requests/s (%.1f %% of %d), at the largest size measured: a key's units and the job's time both grow "
            "with the project, so these rates do not, and no project size is bound by them. What bounds a project's "
            "size is elsewhere: the limits in docs/configuration.md (the archive's expanded size, 20 GiB by default; "
            "an upload, 5 GiB, S3's largest single PUT; a million entries), and a migration's 100,000 source files."
            % (worst_key, 100 * worst_key / PARTITION_WCU_PER_S, PARTITION_WCU_PER_S, worst_prefix,
               100 * worst_prefix / PREFIX_PUTS_PER_S, PREFIX_PUTS_PER_S), ""]
    return out


def bucket_keys(endpoint, bucket, prefix):
    """How many objects (up to 1,000) the bucket holds under `prefix`."""
    url = "%s/%s?list-type=2&prefix=%s" % (endpoint, bucket, urllib.parse.quote(prefix))
    with urllib.request.urlopen(url) as resp:
        return resp.read().count(b"<Key>")


def money(value):
    return "$%.5f" % value


def report(command, results, project_gb):
    out = ["# AWS calls, priced and bounded (`bench/aws_model.py`)", "",
           "Command: `%s`, %s." % (command, time.strftime("%Y-%m-%d")),
           "The `local` server on the AWS adapters against moto, every call counted by `bench/aws_proxy.py`.",
           "", "- Prices: " + PRICES_NOTE, "- Latency model: " + LATENCY_NOTE + ".",
           "- Limits: %d WCU/s and %d RCU/s per partition key; %d PUT/POST/DELETE and %d GET/HEAD per second per S3 prefix."
           % (PARTITION_WCU_PER_S, PARTITION_RCU_PER_S, PREFIX_PUTS_PER_S, PREFIX_GETS_PER_S),
           "- Modeled time: the largest of the bounds (calls in sequence, busiest partition key, busiest prefix, "
           "CPU time as on one vCPU); pessimistic: calls in sequence plus CPU time.", ""]
    for result in results:
        gb = result["input"]["ndjson_bytes"] / GB
        out += ["## %d issues (%d records, %.1f MB of NDJSON, archive %.1f MB)"
                % (result["issues"], result["input"]["records"], result["input"]["ndjson_bytes"] / 1e6, result["archive_bytes"] / 1e6), "",
                "| phase | S3 requests | DynamoDB items written | max WCU / key | max RCU / key | SQS messages | cost | per GB | modeled s | pessimistic s | ≤ %d s |" % WORKER_TIMEOUT_S,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name, p in result["phases"].items():
            out.append("| %s | %d | %d | %d | %.0f | %d | %s | %s | %.1f | %.1f | %s |" % (
                name, p["s3_requests"], p["dynamodb_items_written"], p["counts"]["wcu_max_pk"], p["counts"]["rcu_max_pk"],
                p["sqs_messages"], money(p["cost_usd"]), money(p["cost_usd"] / gb), p["modeled_s"], p["pessimistic_s"],
                "yes" if p["pessimistic_s"] <= WORKER_TIMEOUT_S else "continued"))
        out += ["", "Bounds per phase (seconds): " + "; ".join(
            "%s: %s" % (name, ", ".join("%s %.1f" % (k, v) for k, v in p["bounds"].items()))
            for name, p in result["phases"].items()), ""]
        out += ["<details><summary>Calls per operation</summary>", "", "| phase | operation | calls | figures |", "| --- | --- | ---: | --- |"]
        for name, p in result["phases"].items():
            for operation, figures in p["counts"]["operations"].items():
                rest = ", ".join("%s %s" % (k, round(v, 1)) for k, v in figures.items() if k != "calls")
                out.append("| %s | %s | %d | %s |" % (name, operation, figures["calls"], rest))
        out += ["", "Busiest partition keys (WCU) in the import: " + ", ".join(
            "`%s` %d" % (aws_proxy.shown_pk(k), v) for k, v in list(result["phases"]["import"]["counts"]["wcu_by_pk"].items())[:5]),
            "", "</details>", ""]
    if len(results) > 1:
        out += extrapolation_report(extrapolate(results, project_gb))
    return "\n".join(out)


def summary(result):
    phases = result["phases"]
    gb = result["input"]["ndjson_bytes"] / GB
    return {
        "issues": result["issues"],
        "records": result["input"]["records"],
        "ndjson_bytes": result["input"]["ndjson_bytes"],
        "dynamodb_items_written": sum(p["dynamodb_items_written"] for p in phases.values()),
        "dynamodb_wcu_max_partition_key": max(p["counts"]["wcu_max_pk"] for p in phases.values()),
        "s3_requests": sum(p["s3_requests"] for p in phases.values()),
        "sqs_messages": sum(p["sqs_messages"] for p in phases.values()),
        "modeled_import_s": round(phases["import"]["modeled_s"], 2),
        "modeled_export_s": round(phases["export"]["modeled_s"], 2),
        "pessimistic_import_s": round(phases["import"]["pessimistic_s"], 2),
        "pessimistic_export_s": round(phases["export"]["pessimistic_s"], 2),
        "cost_usd_per_gb": round((phases["import"]["cost_usd"] + phases["export"]["cost_usd"]) / gb, 5),
        "cost_usd_per_gb_all_phases": round(sum(p["cost_usd"] for p in phases.values()) / gb, 5),
        "any_job_over_worker_timeout": any(p["pessimistic_s"] > WORKER_TIMEOUT_S for p in phases.values()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", default="10000,50000,200000",
                        help="issue counts, comma-separated (a size between the smallest and largest checks the extrapolation's line)")
    parser.add_argument("--bin", help="a local binary built with --features aws (default: build it)")
    parser.add_argument("--project-gb", type=int, default=100, help="the project size to extrapolate to, GB of archive")
    parser.add_argument("--out", help="put the report into this file's aws_model section (e.g. bench/RESULTS.md)")
    args = parser.parse_args()
    binary = args.bin
    if not binary:
        harness.progress("building the local server with the AWS adapters")
        subprocess.run(["cargo", "build", "--release", "-p", "local", "--features", "aws"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "local")
    binary = os.path.abspath(binary)
    os.makedirs(harness.WORK_DIR, exist_ok=True)
    results = []
    with Moto() as moto, tempfile.TemporaryDirectory(dir=harness.WORK_DIR, prefix="aws-model-") as work:
        for issues in sorted(int(n) for n in args.issues.split(",")):
            try:
                results.append(bench_size(binary, issues, moto, work))
            except harness.PhaseError as err:
                logs = "".join("\n%s:\n%s" % (name, harness.log_tail(os.path.join(work, name)))
                               for name in sorted(os.listdir(work)) if name.endswith(".log"))
                sys.exit("%d issues: %s%s" % (issues, err, logs))
    command = "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    text = report(command, results, args.project_gb)
    print(text)
    if args.out:
        harness.replace_section(args.out, "aws_model", text)
        harness.progress("report written to " + args.out)
    for result in results:
        print(json.dumps(summary(result)))
    if len(results) > 1:
        model = extrapolate(results, args.project_gb)
        print(json.dumps({"extrapolated_gb": args.project_gb, **{
            name: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items() if k not in ("per_gb", "checks")}
            for name, p in model["phases"].items()}}))


if __name__ == "__main__":
    main()
