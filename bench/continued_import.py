#!/usr/bin/env python3
"""Imports continued across invocations: the cost of stopping and going on.

    python3 bench/continued_import.py [--issues 200000] [--budgets 1,2,5]
                                      [--bin target/release/local] [--runs 5]
                                      [--out bench/CONTINUED.md]

The local server's `--invocation-budget N` gives each worker run N seconds,
as a Lambda invocation has its timeout: past it the import stops at a safe
point, stores a checkpoint (a gzip access point and the reader's state) and
goes on in a fresh run. For each archive (the synthetic one of `run.py`, and
the same tar recompressed by `gzip -6` into one member, as GitLab writes its
exports) this imports it in one run and with each budget, each time on a
fresh server and data directory, and reports against the one-run import of
the same archive in the same run of this script: total time (median of
--runs, taken in rounds that import with every budget once), bytes inflated (the server's `import_progress.inflated_bytes`,
against the archive's uncompressed size), invocations and peak RSS.
Standard library only (it borrows `run.py`'s generator and server driver).
"""

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness beside this script)

# The issue's targets: against one run, at every budget.
TIME_TARGET = 1.15
WORK_TARGET = 1.05


def uncompressed_size(archive):
    with gzip.open(archive, "rb") as f:
        size = 0
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return size
            size += len(chunk)


def one_member_gzip6(archive):
    """The archive's tar recompressed by `gzip -6` (one member), cached."""
    target = archive.replace(".tar.gz", "-gzip6.tar.gz")
    if not os.path.exists(target):
        run.progress("recompressing %s with gzip -6" % os.path.basename(archive))
        with open(target + ".partial", "wb") as out:
            unzip = subprocess.Popen(["gzip", "-dc", archive], stdout=subprocess.PIPE)
            subprocess.run(["gzip", "-6", "-c"], stdin=unzip.stdout, stdout=out, check=True)
            if unzip.wait() != 0:
                raise run.PhaseError("gzip -dc %s failed" % archive)
        os.replace(target + ".partial", target)
    return target


def import_once(binary, archive, budget, log):
    """Imports `archive` on a fresh server: (seconds, import_progress, peak RSS MB)."""
    data_dir = tempfile.mkdtemp(prefix="continued-", dir=run.WORK_DIR)
    try:
        args = ["--data-dir", data_dir]
        if budget is not None:
            args += ["--invocation-budget", str(budget)]
        with run.Server(binary, data_dir, log, args=args) as server:
            _, seconds, status = server.import_archive(archive, "continued")
            return seconds, status.get("import_progress") or {}, server.peak_rss_mb()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def bench_archive(binary, label, archive, budgets, runs, log):
    expanded = uncompressed_size(archive)
    configurations = [None] + budgets
    # Round after round, every budget once a round: the machine's drift
    # falls on all of them alike.
    measured = {budget: [] for budget in configurations}
    for attempt in range(runs):
        for budget in configurations:
            run.progress("%s: budget %s, round %d of %d" % (label, budget or "none", attempt + 1, runs))
            measured[budget].append(import_once(binary, archive, budget, log))
    rows = []
    for budget in configurations:
        results = measured[budget]
        seconds = statistics.median(r[0] for r in results)
        progress = results[0][1]
        rows.append({
            "budget": budget,
            "seconds": seconds,
            "runs": [r[0] for r in results],
            "inflated": progress.get("inflated_bytes"),
            "invocations": progress.get("invocations"),
            "rss": max(r[2] for r in results),
        })
    return {"label": label, "archive": archive, "size": os.path.getsize(archive), "expanded": expanded, "rows": rows}


def report(benches, issues, runs):
    out = ["# Imports continued across invocations", ""]
    out.append("Generated %s by `python3 bench/continued_import.py --issues %d --runs %d` on %s." % (
        datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), issues, runs, run.machine()))
    out.append("")
    out.append("Each import on a fresh `local serve` and data directory; `budget` is `--invocation-budget` "
               "(seconds of a worker run before it stops at a safe point and goes on in a fresh one). "
               "Time is from the upload's POST to `finished`, the median of %d; `× one run` divides it by "
               "the one-run import of the same archive in this run. Inflated is the server's "
               "`import_progress.inflated_bytes` against the archive's uncompressed size." % runs)
    out.append("")
    verdicts = []
    for bench in benches:
        out.append("## %s: %.1f MB, %.1f MB uncompressed" % (bench["label"], bench["size"] / run.MB, bench["expanded"] / run.MB))
        out.append("")
        out.append("| budget s | invocations | import s | runs s | × one run | inflated MB | × uncompressed | peak RSS MB |")
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        whole = bench["rows"][0]
        for row in bench["rows"]:
            time_ratio = row["seconds"] / whole["seconds"]
            work_ratio = (row["inflated"] or 0) / bench["expanded"]
            out.append("| %s | %s | %.2f | %s | %.2f× | %.1f | %.3f× | %.1f |" % (
                "one run" if row["budget"] is None else row["budget"], row["invocations"], row["seconds"],
                ", ".join("%.2f" % s for s in row["runs"]), time_ratio, (row["inflated"] or 0) / run.MB,
                work_ratio, row["rss"]))
            if row["budget"] is not None:
                verdicts.append("- %s, budget %s s: time %.2f× (target ≤ %.2f×: %s), work %.3f× (target ≤ %.2f×: %s)" % (
                    bench["label"], row["budget"], time_ratio, TIME_TARGET,
                    "**met**" if time_ratio <= TIME_TARGET else "**not met**", work_ratio, WORK_TARGET,
                    "**met**" if work_ratio <= WORK_TARGET else "**not met**"))
        out.append("")
    out.append("## Targets")
    out.append("")
    out.extend(verdicts)
    out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issues", type=int, default=200000)
    parser.add_argument("--budgets", default="1,2,5", help="invocation budgets in seconds, comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="imports per budget (the median is reported)")
    parser.add_argument("--bin", default=os.path.join(run.ROOT, "target", "release", "local"))
    parser.add_argument("--out", default=os.path.join(run.ROOT, "bench", "CONTINUED.md"))
    args = parser.parse_args()
    budgets = [float(b) if "." in b else int(b) for b in args.budgets.split(",") if b]
    archive, _ = run.synthetic_archive(args.issues)
    log = os.path.join(run.WORK_DIR, "continued-server.log")
    benches = [
        bench_archive(args.bin, "synthetic archive (gzip -1, one member)", archive, budgets, args.runs, log),
        bench_archive(args.bin, "the same tar by gzip -6 (one member, as GitLab writes)", one_member_gzip6(archive),
                      budgets, args.runs, log),
    ]
    text = report(benches, args.issues, args.runs)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
