#!/usr/bin/env python3
"""Peak memory for the largest records the limits accept.

Imports an archive of a few records each just under --max-record-bytes
(32 MiB by default), then exports it, each phase on a fresh `local serve`
process, and prints the peak RSS (VmHWM) of each beside the one of a small
import in the same run: the figure the README states as the memory bound.

    python3 bench/big_records.py --bin target/release/local [--records 6]

Its last line is one JSON object.
"""

import argparse
import gzip
import io
import json
import os
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the Server and phase helpers of the main bench)

MIB = 1 << 20


def archive(path, records, record_bytes):
    """`records` issues of `record_bytes` bytes each (newline excluded)."""
    def entry(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w|") as tar:
        entry(tar, "VERSION", b"0.2.4")
        entry(tar, "tree/project.json", b"{}")
        lines = []
        for iid in range(1, records + 1):
            head = b'{"iid":%d,"description":"' % iid
            tail = b'"}'
            filler = (b"lorem ipsum dolor sit amet " * (record_bytes // 27 + 1))[: record_bytes - len(head) - len(tail)]
            lines.append(head + filler + tail + b"\n")
        entry(tar, "tree/project/issues.ndjson", b"".join(lines))


def phase(binary, data_dir, work):
    """Runs `work(server)` on a fresh server; returns (its result, peak RSS MB)."""
    with run.Server(binary, data_dir, os.path.join(data_dir, "..", "server.log")) as server:
        result = work(server)
        return result, server.peak_rss_mb()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="target/release/local")
    parser.add_argument("--records", type=int, default=6)
    parser.add_argument("--record-bytes", type=int, default=32 * MIB - 64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        small, big = os.path.join(scratch, "small.tar.gz"), os.path.join(scratch, "big.tar.gz")
        archive(small, args.records, 1024)
        archive(big, args.records, args.record_bytes)
        data = os.path.join(scratch, "data")
        os.makedirs(data)
        figures = {"records": args.records, "record_bytes": args.record_bytes}
        (_, _, _), figures["small_import_peak_rss_mb"] = phase(
            args.bin, data, lambda s: s.import_archive(small, "small"))
        (project, seconds, _), figures["import_peak_rss_mb"] = phase(
            args.bin, data, lambda s: s.import_archive(big, "big"))
        figures["import_seconds"] = round(seconds, 2)
        figures["export_seconds"], figures["export_peak_rss_mb"] = phase(
            args.bin, data, lambda s: round(s.export(project), 2))
        for key in ("small_import_peak_rss_mb", "import_peak_rss_mb", "export_peak_rss_mb"):
            figures[key] = round(figures[key], 1)
    print("records of %d bytes: import peak %.1f MB, export peak %.1f MB (small import: %.1f MB)" % (
        args.record_bytes, figures["import_peak_rss_mb"], figures["export_peak_rss_mb"],
        figures["small_import_peak_rss_mb"]))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
