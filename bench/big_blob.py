#!/usr/bin/env python3
"""One huge file in an archive, imported and exported in short invocations.

    python3 bench/big_blob.py [--gib 4] [--budget 2] [--slice-mib 64]
                              [--bin target/release/local] [--out bench/BIG_BLOB.md]

Builds an archive whose `project.bundle` is --gib GiB of incompressible
bytes (as a repository bundle's packfile is), compressed by `gzip -1` into
one member; imports it on a `local serve --invocation-budget` server (the
blob goes in numbered parts across invocations), exports it with
`--export-slice-bytes` (the blob is cut between slices, one worker run
each), downloads the export, and checks the bundle comes back byte for byte
(SHA-256 of both). Reports each phase's time against `gzip -dc` and
`gzip -1` of the same bytes, the import's invocations and bytes inflated,
and the server's peak RSS. Standard library only (it borrows `run.py`'s
server driver).
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness beside this script)

GIB = 1 << 30
CHUNK = 8 << 20


class Noise:
    """A file-like source of `size` pseudo-random bytes (fast: a counter
    hashed by SHA-256 is slow in Python, so blocks of os.urandom are
    repeated with a changing prefix; gzip cannot find the repeats, which lie
    farther apart than its 32 KiB window)."""

    def __init__(self, size):
        self.size, self.sent = size, 0
        self.block = os.urandom(CHUNK)
        self.digest = hashlib.sha256()
        self.current = (None, None)

    def _block(self, number):
        if self.current[0] != number:
            self.current = (number, memoryview(number.to_bytes(8, "little") + self.block[8:]))
        return self.current[1]

    def read(self, n=-1):
        if self.sent >= self.size:
            return b""
        n = CHUNK if n is None or n < 0 else min(n, CHUNK)
        offset = self.sent % CHUNK
        n = min(n, self.size - self.sent, CHUNK - offset)
        data = bytes(self._block(self.sent // CHUNK)[offset:offset + n])
        self.sent += len(data)
        self.digest.update(data)
        return data


def make_archive(path, size):
    """The archive and the SHA-256 of its bundle."""
    noise = Noise(size)
    with open(path + ".tar", "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in [("VERSION", b"0.2.4"), ("tree/project.json", b'{"description":"big bundle"}'),
                               ("tree/project/labels.ndjson", b'{"title":"bug"}\n')]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, fileobj=__import__("io").BytesIO(data))
            info = tarfile.TarInfo("project.bundle")
            info.size = size
            tar.addfile(info, fileobj=noise)
    start = time.perf_counter()
    with open(path, "wb") as out:
        subprocess.run(["gzip", "-1", "-c", path + ".tar"], stdout=out, check=True)
    gzip1 = time.perf_counter() - start
    os.remove(path + ".tar")
    return noise.digest.hexdigest(), gzip1


def gzip_dc_seconds(path):
    start = time.perf_counter()
    subprocess.run("gzip -dc %s > /dev/null" % path, shell=True, check=True)
    return time.perf_counter() - start


def bundle_digest(archive):
    digest = hashlib.sha256()
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name == "project.bundle":
                f = tar.extractfile(member)
                while True:
                    chunk = f.read(CHUNK)
                    if not chunk:
                        return digest.hexdigest()
                    digest.update(chunk)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=4)
    parser.add_argument("--budget", type=float, default=2, help="--invocation-budget of the server, seconds")
    parser.add_argument("--slice-mib", type=int, default=64, help="--export-slice-bytes of the server, MiB")
    parser.add_argument("--bin", default=os.path.join(run.ROOT, "target", "release", "local"))
    parser.add_argument("--out", default=os.path.join(run.ROOT, "bench", "BIG_BLOB.md"))
    args = parser.parse_args()
    size = int(args.gib * GIB)
    os.makedirs(run.WORK_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix="big-blob-", dir=run.WORK_DIR)
    try:
        archive = os.path.join(work, "big.tar.gz")
        run.progress("writing a %.1f GiB bundle into %s" % (args.gib, archive))
        digest, gzip1 = make_archive(archive, size)
        gunzip = gzip_dc_seconds(archive)
        data_dir = os.path.join(work, "data")
        log = os.path.join(work, "server.log")
        budget = int(args.budget) if float(args.budget).is_integer() else args.budget
        server_args = ["--data-dir", data_dir, "--invocation-budget", str(budget),
                       "--export-slice-bytes", str(args.slice_mib << 20)]
        with run.Server(args.bin, data_dir, log, args=server_args) as server:
            run.progress("importing")
            project, import_seconds, status = server.import_archive(archive, "big-bundle")
            progress = status.get("import_progress") or {}
            run.progress("exporting")
            export_seconds = server.export(project)
            exported = os.path.join(work, "export.tar.gz")
            download_seconds = server.download_export(project, exported)
            rss = server.peak_rss_mb()
        run.progress("checking the bundle")
        same = bundle_digest(exported) == digest
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# One huge file across invocations",
        "",
        "Generated %s by `python3 bench/big_blob.py --gib %s --budget %s --slice-mib %d` on %s." % (
            datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), args.gib, args.budget, args.slice_mib,
            run.machine()),
        "",
        "An archive whose `project.bundle` is %.1f GiB of incompressible bytes (one `gzip -1` member), "
        "imported by `local serve --invocation-budget %s` and exported with `--export-slice-bytes %d MiB`." % (
            args.gib, args.budget, args.slice_mib),
        "",
        "| phase | s | baseline | s ÷ baseline |",
        "| --- | --- | --- | --- |",
        "| import (%s invocations, %.1f GB inflated) | %.1f | `gzip -dc` %.1f s | %.2f× |" % (
            progress.get("invocations"), (progress.get("inflated_bytes") or 0) / 1e9, import_seconds, gunzip,
            import_seconds / gunzip),
        "| export (slices of %d MiB) | %.1f | `gzip -1` %.1f s | %.2f× |" % (
            args.slice_mib, export_seconds, gzip1, export_seconds / gzip1),
        "| download | %.1f | | |" % download_seconds,
        "",
        "- bundle equal byte for byte after import and export (SHA-256): **%s**" % ("yes" if same else "NO"),
        "- server peak RSS: %.1f MB" % rss,
        "",
    ]
    text = "\n".join(lines)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
