#!/usr/bin/env python3
"""Relations export fan-out: wall time of one relations export of a large
synthetic project with the local server's worker pool at 1 worker and at N,
against the sum of the time each relation (or batch) took to write.

    cargo build --release --bin local
    python3 bench/relations_fanout.py [--issues 100000] [--workers 1,2,4] [--batched] [--runs 3]

Each worker count runs --runs times on a fresh server; the table shows the
median and the range. The per-part times come from the server's
"relation export part written" log events. Prints a Markdown table. Uses only
the standard library and the real `local` binary (target/release/local, or
$LOCAL_BIN).
"""

import argparse
import gzip
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import uuid

TOKEN = "bench-root-token-0123456789"


def synthetic_archive(issues: int) -> bytes:
    """The same GitLab-shaped project as the end-to-end tests' generator."""
    lines = []
    for i in range(1, issues + 1):
        notes = ",".join(
            '{"note":"Note %d on issue %d","author_id":%d,"created_at":"2026-01-01T00:00:00.000Z"}' % (n, i, n + 1)
            for n in range(i % 4)
        )
        lines.append(
            '{"iid":%d,"title":"Issue %d","description":"%s","state":"opened","notes":[%s],'
            '"label_links":[{"label":{"title":"bug"}}]}' % (i, i, "Steps to reproduce. " * (1 + i % 5), notes)
        )
    files = {
        "VERSION": b"0.2.4",
        "tree/project.json": b'{"description":"synthetic","visibility_level":0}',
        "tree/project/labels.ndjson": b'{"title":"bug","color":"#d9534f"}\n{"title":"feature","color":"#428bca"}\n',
        "tree/project/issues.ndjson": ("\n".join(lines) + "\n").encode(),
        "tree/project/merge_requests.ndjson": "".join(
            '{"iid":%d,"title":"MR %d","source_branch":"b%d","target_branch":"main"}\n' % (i, i, i)
            for i in range(1, issues // 10 + 2)
        ).encode(),
        "tree/project/milestones.ndjson": "".join(
            '{"iid":%d,"title":"Milestone %d"}\n' % (i, i) for i in range(1, issues // 100 + 2)
        ).encode(),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers={"PRIVATE-TOKEN": TOKEN, **(headers or {})})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read() or b"null")


def multipart(fields, file_bytes):
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    for name, value in fields.items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.tar.gz"\r\n\r\n'.encode())
    body.write(file_bytes)
    body.write(f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def wait(predicate, timeout=3600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value is not None:
            return value
        time.sleep(0.05)
    raise TimeoutError


def part_seconds(log_path, message="relation export part written"):
    """The time each part took, from the server's JSON log events `message`."""
    seconds = []
    with open(log_path) as log:
        for line in log:
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == message:
                seconds.append(fields["elapsed_ms"] / 1000)
    return seconds


def serve(binary, data, workers, log, rust_log, extra=()):
    """A `local serve` on a free port with `workers` workers, JSON logs to
    `log`; returns the process and its API base URL once it is ready."""
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--bind", f"127.0.0.1:{port}", "--data-dir", os.path.join(data, "d"),
         "--workers", str(workers), "--log-json", *extra],
        env={**os.environ, "LOCAL_ROOT_TOKEN": TOKEN, "RUST_LOG": rust_log},
        stdout=subprocess.PIPE, stderr=log,
    )
    for line in server.stdout:
        if line.strip() == b"ready":
            break
    return server, f"http://127.0.0.1:{port}/api/v4"


def import_and_wait(base, archive):
    """The archive imported as a new project; its id."""
    body, headers = multipart({"path": "bench"}, archive)
    pid = request(base, "POST", "/projects/import", body, headers)["id"]
    wait(lambda: True if request(base, "GET", f"/projects/{pid}/import")["import_status"] == "finished" else None)
    return pid


def run(binary, archive, workers, batched):
    with tempfile.TemporaryDirectory() as data:
        log_path = os.path.join(data, "server.log")
        with open(log_path, "w") as log:
            server, base = serve(binary, data, workers, log, "warn,shared::worker::relation_export=info")
        try:
            pid = import_and_wait(base, archive)
            start = time.perf_counter()
            request(base, "POST", f"/projects/{pid}/export_relations" + ("?batched=true" if batched else ""))

            def done():
                entries = request(base, "GET", f"/projects/{pid}/export_relations/status")
                if entries and all(e["status"] != 0 for e in entries):
                    return entries
                return None

            entries = wait(done)
            elapsed = time.perf_counter() - start
            assert all(e["status"] == 1 for e in entries), entries
        finally:
            server.terminate()
            server.wait()
        parts = part_seconds(log_path)
        return elapsed, sum(parts), len(parts), sum(e["total_objects_count"] for e in entries), len(entries)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--batched", action="store_true")
    parser.add_argument("--runs", type=int, default=3, help="runs per worker count (median shown)")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.environ.get("LOCAL_BIN", os.path.join(root, "target", "release", "local"))
    if not os.path.exists(binary):
        sys.exit(f"{binary} not found: run `cargo build --release --bin local` first")
    archive = synthetic_archive(args.issues)
    raw = sum(len(x) for x in [gzip.decompress(archive)])
    print(f"synthetic project: {args.issues} issues, archive {len(archive)/1e6:.1f} MB ({raw/1e6:.1f} MB tar), "
          f"batched={args.batched}, {os.cpu_count()} cores, median of {args.runs} runs")
    print()
    print("| workers | wall time (s) | range (s) | sum of part times (s) | parts | sum / wall | speed-up vs 1 | objects | relations |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    first = None
    for workers in [int(w) for w in args.workers.split(",")]:
        runs = [run(binary, archive, workers, args.batched) for _ in range(args.runs)]
        wall = statistics.median(r[0] for r in runs)
        parts_sum = statistics.median(r[1] for r in runs)
        _, _, parts, objects, relations = runs[0]
        first = first or wall
        print(f"| {workers} | {wall:.2f} | {min(r[0] for r in runs):.2f}–{max(r[0] for r in runs):.2f} | "
              f"{parts_sum:.2f} | {parts} | {parts_sum / wall:.2f} | {first / wall:.2f}x | {objects} | {relations} |")


if __name__ == "__main__":
    main()
