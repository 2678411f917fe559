#!/usr/bin/env python3
"""Full export fan-out: wall time of one full export of a large synthetic
project written in slices by the local server's worker pool at 1, 2 and 4
workers, against the sum of the time each slice took, and against the same
export written in one stream (one slice) in the same run.

    cargo build --release --bin local
    python3 bench/export_fanout.py [--issues 200000] [--workers 1,2,4] [--slice-mb 64] [--runs 3]

Each configuration runs --runs times on a fresh server; the table shows the
median and the range. The per-slice times come from the server's "export
slice written" log events. Prints a Markdown table. Uses only the standard
library and the real `local` binary (target/release/local, or $LOCAL_BIN).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from relations_fanout import TOKEN, import_and_wait, part_seconds, request, serve, wait  # noqa: E402
from run import synthetic_archive  # noqa: E402


def run(binary, archive, workers, slice_bytes):
    with tempfile.TemporaryDirectory() as data:
        log_path = os.path.join(data, "server.log")
        extra = ["--export-rate-limit", "0", "--download-rate-limit", "0", "--export-slice-bytes", str(slice_bytes)]
        with open(log_path, "w") as log:
            server, base = serve(binary, data, workers, log, "warn,shared::worker::export=info", extra)
        try:
            pid = import_and_wait(base, archive)
            subprocess.run(["sync"], check=False)
            start = time.perf_counter()
            request(base, "POST", f"/projects/{pid}/export")

            def done():
                status = request(base, "GET", f"/projects/{pid}/export")["export_status"]
                assert status != "failed", status
                return True if status == "finished" else None

            wait(done)
            elapsed = time.perf_counter() - start
            req = urllib.request.Request(base + f"/projects/{pid}/export/download", headers={"PRIVATE-TOKEN": TOKEN})
            with urllib.request.urlopen(req) as resp:
                size = 0
                while chunk := resp.read(1 << 20):
                    size += len(chunk)
        finally:
            server.terminate()
            server.wait()
        slices = part_seconds(log_path, "export slice written")
        return elapsed, sum(slices), len(slices), size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=200_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--slice-mb", type=int, default=64, help="tar MiB per slice")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median shown)")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.environ.get("LOCAL_BIN", os.path.join(root, "target", "release", "local"))
    if not os.path.exists(binary):
        sys.exit(f"{binary} not found: run `cargo build --release --bin local` first")
    path, summary = synthetic_archive(args.issues)
    with open(path, "rb") as f:
        archive = f.read()
    raw = summary["ndjson_bytes"]
    print(f"synthetic project (bench/run.py's): {args.issues} issues, {summary['records']} records, "
          f"{raw/1e6:.1f} MB NDJSON, "
          f"slices of {args.slice_mb} MiB, {os.cpu_count()} cores, median of {args.runs} runs")
    print()
    print("| configuration | wall time (s) | range (s) | sum of slice times (s) | slices | sum / wall | vs one stream | archive MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    configurations = [("one stream, 1 worker", 1, 1 << 50)]
    configurations += [(f"slices, {w} worker{'s' if w > 1 else ''}", w, args.slice_mb << 20)
                       for w in (int(w) for w in args.workers.split(","))]
    baseline = None
    for name, workers, slice_bytes in configurations:
        runs = [run(binary, archive, workers, slice_bytes) for _ in range(args.runs)]
        wall = statistics.median(r[0] for r in runs)
        slices_sum = statistics.median(r[1] for r in runs)
        _, _, slices, size = runs[0]
        baseline = baseline or wall
        ratio = f"{slices_sum / wall:.2f}" if slices else "–"
        print(f"| {name} | {wall:.2f} | {min(r[0] for r in runs):.2f}–{max(r[0] for r in runs):.2f} | "
              f"{slices_sum:.2f} | {slices} | {ratio} | {baseline / wall:.2f}× | {size/1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
