#!/usr/bin/env python3
"""Years of use on one disk, compressed: each operation repeated many times on
one `local` server, and what it leaves behind per repetition.

    python3 bench/soak.py [--issues 5000] [--reps 20] [--warmup 3]
                          [--bin target/release/local] [--out bench/RESULTS.md]

One server and data directory for the whole run. For each operation it runs
`--warmup` repetitions, measures the data directory (bytes as `du` counts
them, apparent bytes, files), runs `--reps` more, waits until the directory
stops changing (background work such as a deletion is done), and measures
again. It prints, per operation, the growth per repetition, and the server's
RSS, open descriptors and threads after it. Target: 0 bytes and 0 files per
repetition for every operation; deleting a project gives back what it took.

The operations, on one synthetic project (bench/run.py's generator):
  overwrite import    POST /projects/import with overwrite=true, same path
  full export         POST /projects/:id/export, until finished
  relations export    POST /projects/:id/export_relations, batched and not
  relation import     POST /projects/import-relation (issues)
  failed import       a corrupt archive imported over a project, overwrite=true
  delete, re-import   DELETE /projects/:id, then the same path imported again

It also reports what one imported project takes on disk per MB of archive,
and the data directory once the project is deleted and `local compact` has
run.
`--out` puts the report into that file's `soak` section. Standard library
only.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as harness  # noqa: E402

SETTLE_SECONDS = 1.0
SETTLE_TIMEOUT_SECONDS = 120


def measure(directory):
    """(bytes on disk, apparent bytes, files) under `directory`."""
    disk = apparent = files = 0
    for root, _, names in os.walk(directory):
        for name in names:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            disk += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return disk, apparent, files


def settled(directory):
    """Waits until the directory's measure holds still for SETTLE_SECONDS."""
    deadline = time.perf_counter() + SETTLE_TIMEOUT_SECONDS
    last = measure(directory)
    while time.perf_counter() < deadline:
        time.sleep(SETTLE_SECONDS)
        now = measure(directory)
        if now == last:
            return now
        last = now
    raise harness.PhaseError("the data directory kept changing for %d s" % SETTLE_TIMEOUT_SECONDS)


def process_figures(server):
    """(RSS MB, open descriptors, threads) of the server now."""
    pid = server.process.pid
    rss = threads = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024 / harness.MB
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, len(os.listdir("/proc/%d/fd" % pid)), threads


class Soak:
    """The operations, on one server."""

    def __init__(self, server, archive, corrupt):
        self.server, self.archive, self.corrupt = server, archive, corrupt
        self.project = None

    def import_as(self, path, archive, overwrite, expect="finished"):
        fields = {"path": path}
        if overwrite:
            fields["overwrite"] = "true"
        body, headers = harness.multipart_body(fields, archive)
        project = self.server.request("POST", "/projects/import", body, headers)
        failed = "failed" if expect == "finished" else "never"
        self.server.poll("/projects/%d/import" % project["id"], "import_status", expect, failed)
        return project["id"]

    def overwrite_import(self):
        self.project = self.import_as("soak", self.archive, overwrite=True)

    def full_export(self):
        self.server.export(self.project)

    def relations_export(self, batched):
        query = "?batched=true" if batched else ""
        self.server.request("POST", "/projects/%d/export_relations%s" % (self.project, query))
        deadline = time.perf_counter() + harness.PHASE_TIMEOUT_SECONDS
        while time.perf_counter() < deadline:
            parts = self.server.request("GET", "/projects/%d/export_relations/status" % self.project)
            if any(p["status"] == -1 for p in parts):
                raise harness.PhaseError("relations export failed: %s" % json.dumps(parts)[:1500])
            if parts and all(p["status"] == 1 for p in parts):
                return
            time.sleep(harness.POLL_MAX_SECONDS)
        raise harness.PhaseError("relations export not finished")

    def relation_import(self):
        body, headers = harness.multipart_body({"path": "root/soak", "relation": "issues"}, self.archive)
        started = self.server.request("POST", "/projects/import-relation", body, headers)
        deadline = time.perf_counter() + harness.PHASE_TIMEOUT_SECONDS
        while time.perf_counter() < deadline:
            imports = self.server.request("GET", "/projects/%d/relation-imports" % self.project)
            mine = [i for i in imports if i["id"] == started["id"]]
            if mine and mine[0]["status"] == "failed":
                raise harness.PhaseError("relation import failed: %s" % json.dumps(mine[0])[:1500])
            if mine and mine[0]["status"] == "finished":
                return
            time.sleep(harness.POLL_MAX_SECONDS)
        raise harness.PhaseError("relation import not finished")

    def failed_import(self):
        self.import_as("failing", self.corrupt, overwrite=True, expect="failed")

    def delete_and_reimport(self):
        self.server.request("DELETE", "/projects/%d" % self.project)
        self.project = self.import_as("soak", self.archive, overwrite=False)


def soak(binary, issues, reps, warmup, download_ttl, work):
    archive, summary = harness.synthetic_archive(issues)
    corrupt = os.path.join(work, "corrupt.tar.gz")
    with open(corrupt, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00" + os.urandom(4096))
    data = os.path.join(work, "data")
    log = os.path.join(work, "server.log")
    rows, footprint = [], None
    args = ["--data-dir", data, "--download-ttl", str(download_ttl)]
    with harness.Server(binary, data, log, args=args) as server:
        empty = settled(data)
        ops = Soak(server, archive, corrupt)
        ops.overwrite_import()
        imported = settled(data)
        footprint = (imported[0] - empty[0]) / os.path.getsize(archive)
        operations = [
            ("overwrite import", ops.overwrite_import),
            ("full export", ops.full_export),
            ("relations export, batched", lambda: ops.relations_export(True)),
            ("relations export", lambda: ops.relations_export(False)),
            ("relation import", ops.relation_import),
            ("failed import", ops.failed_import),
            ("delete, re-import", ops.delete_and_reimport),
        ]
        for name, operation in operations:
            harness.progress("%s: %d warm-up and %d measured repetitions" % (name, warmup, reps))
            for _ in range(warmup):
                operation()
            before = settled(data)
            start = time.perf_counter()
            for _ in range(reps):
                operation()
            seconds = (time.perf_counter() - start) / reps
            after = settled(data)
            rss, fds, threads = process_figures(server)
            rows.append({
                "operation": name,
                "disk_per_rep": (after[0] - before[0]) / reps,
                "bytes_per_rep": (after[1] - before[1]) / reps,
                "files_per_rep": (after[2] - before[2]) / reps,
                "seconds_per_rep": seconds,
                "disk_after": after[0], "files_after": after[2],
                "rss_mb": rss, "fds": fds, "threads": threads,
            })
        # Deleting the project gives back what it took.
        server.request("DELETE", "/projects/%d" % ops.project)
        after_delete = settled(data)
    # The database keeps freed pages for reuse; `local compact` returns them.
    subprocess.run([binary, "compact", "--data-dir", data], check=True, stdout=subprocess.DEVNULL)
    compacted = measure(data)
    return {"compacted": compacted, "issues": issues, "download_ttl": download_ttl, "archive_bytes": os.path.getsize(archive), "ndjson_bytes": summary["ndjson_bytes"],
            "reps": reps, "warmup": warmup, "rows": rows, "footprint": footprint,
            "empty": empty, "imported": imported, "after_delete": after_delete}


def report(command, result):
    mb = harness.MB
    out = ["# Soak: growth per repetition (`bench/soak.py`)", "",
           "Command: `%s`, %s, on one server and data directory." % (command, datetime.now(timezone.utc).strftime("%Y-%m-%d")),
           "Synthetic project of %d issues: archive %.1f MB, %.1f MB of NDJSON. %d warm-up and %d measured "
           "repetitions per operation; the data directory is measured once it stops changing. Download URLs live "
           "%d s: an archive or relations export superseded by a newer one is kept that long (so a URL handed out "
           "is never cut off), then deleted when the next one finishes."
           % (result["issues"], result["archive_bytes"] / mb, result["ndjson_bytes"] / mb, result["warmup"], result["reps"],
              result["download_ttl"]),
           "",
           "| operation | disk growth / rep (bytes) | apparent bytes / rep | files / rep | s / rep | data dir after (MB, files) | RSS (MB) | fds | threads |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    def whole(value):
        """A figure rounded to whole units, never `-0`."""
        return int(round(value)) or 0

    for row in result["rows"]:
        out.append("| %s | %d | %d | %.2f | %.2f | %.1f, %d | %.1f | %d | %d |" % (
            row["operation"], whole(row["disk_per_rep"]), whole(row["bytes_per_rep"]), row["files_per_rep"],
            row["seconds_per_rep"],
            row["disk_after"] / mb, row["files_after"], row["rss_mb"], row["fds"], row["threads"]))
    empty, imported, gone = result["empty"], result["imported"], result["after_delete"]
    out += ["",
            "One imported project takes %.2f MB on disk per MB of archive (%.1f MB for a %.1f MB archive: its "
            "records, uncompressed, and their index)." % (result["footprint"], (imported[0] - empty[0]) / mb,
                                                          result["archive_bytes"] / mb),
            "Empty data directory: %.2f MB in %d files; after the last delete: %.2f MB in %d files (the database "
            "file keeps its freed pages for reuse; it does not shrink); after `local compact` with the server "
            "stopped: %.2f MB in %d files." % (empty[0] / mb, empty[2], gone[0] / mb, gone[2],
                                               result["compacted"][0] / mb, result["compacted"][2]),
            ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--download-ttl", type=int, default=0,
                        help="the server's download URL lifetime: superseded archives and relations exports are kept "
                             "that long after a newer one finished (default 0: pruned at once)")
    parser.add_argument("--bin", default=os.path.join(harness.ROOT, "target", "release", "local"))
    parser.add_argument("--out", help="put the report into this file's soak section (e.g. bench/RESULTS.md)")
    args = parser.parse_args()
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit("%s not found: build it with `cargo build --release --bin local`" % binary)
    with tempfile.TemporaryDirectory(prefix="soak-") as work:
        try:
            result = soak(binary, args.issues, args.reps, args.warmup, args.download_ttl, work)
        except harness.PhaseError as err:
            sys.exit("%s\n%s" % (err, harness.log_tail(os.path.join(work, "server.log"))))
    command = "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], harness.ROOT)] + sys.argv[1:])
    text = report(command, result)
    print(text)
    if args.out:
        harness.replace_section(args.out, "soak", text)
        harness.progress("report written to " + args.out)
    print(json.dumps({row["operation"]: [row["disk_per_rep"], row["files_per_rep"]] for row in result["rows"]}))


if __name__ == "__main__":
    main()
