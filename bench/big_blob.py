#!/usr/bin/env python3
"""One huge file in an archive, imported, exported and migrated in short
invocations.

    python3 bench/big_blob.py [--gib 4] [--budget 2] [--slice-mib 64]
                              [--bin target/release/local] [--out bench/BIG_BLOB.md]

Builds an archive whose `project.bundle` is --gib GiB of incompressible
bytes (as a repository bundle's packfile is), compressed by `gzip -1` into
one member; imports it on a `local serve --invocation-budget` server (the
blob goes in numbered parts across invocations), exports it with
`--export-slice-bytes` (the blob is cut between slices, one worker run
each), downloads the export, and checks the bundle comes back byte for byte
(SHA-256 of both). Then a second server, with the same budget, migrates
the project from the first (`POST /bulk_imports`) through a proxy that
counts the bytes the source sends: the bundle's file comes over several
runs, each asking for the rest of the file only, so the source sends it
about once. Reports each phase's time against `gzip -dc` and `gzip -1` of
the same bytes, the import's invocations and bytes inflated, the bytes the
source sent against its file's size, and the servers' peak RSS. Standard
library only (it borrows `run.py`'s server driver).
"""

import argparse
import hashlib
import os
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
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


class CountingProxy:
    """A TCP proxy on 127.0.0.1 to `target` (host, port) that counts the
    bytes the target sends back, and the requests with a `Range`."""

    def __init__(self, target):
        self.target, self.received, self.ranged = target, 0, 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source, sink, counted):
        try:
            while True:
                data = source.recv(1 << 20)
                if not data:
                    break
                with self.lock:
                    if counted:
                        self.received += len(data)
                    else:
                        self.ranged += data.lower().count(b"\r\nrange: bytes=")
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def migrate(destination, source_url, path):
    """Migrates `path` from `source_url` into `destination`: (seconds, the
    entity's project import status)."""
    body = json.dumps({
        "configuration": {"url": source_url, "access_token": run.TOKEN},
        "entities": [{"source_type": "project_entity", "source_full_path": path,
                      "destination_slug": "big-migrated", "destination_namespace": "root",
                      "migrate_memberships": False}],
    }).encode()
    start = time.perf_counter()
    created = destination.request("POST", "/bulk_imports", body, {"Content-Type": "application/json"})
    destination.poll("/bulk_imports/%d" % created["id"], "status", "finished")
    seconds = time.perf_counter() - start
    entity = destination.request("GET", "/bulk_imports/%d/entities" % created["id"])[0]
    return seconds, entity["project_id"], destination.request("GET", "/projects/%d/import" % entity["project_id"])


def file_size(server, path):
    """The size of the file a download route serves, from the `Content-Range`
    of a one-byte range."""
    req = urllib.request.Request(server.base + path, headers={"PRIVATE-TOKEN": run.TOKEN, "Range": "bytes=0-0"})
    with urllib.request.urlopen(req) as resp:
        return int(resp.headers["Content-Range"].rsplit("/", 1)[1])


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
            # Room on the disk for the migrations' copies.
            os.remove(archive)
            progress = status.get("import_progress") or {}
            run.progress("exporting")
            export_seconds = server.export(project)
            exported = os.path.join(work, "export.tar.gz")
            download_seconds = server.download_export(project, exported)
            rss = server.peak_rss_mb()
            run.progress("checking the bundle")
            same = bundle_digest(exported) == digest
            os.remove(exported)
            host, port = server.base.split("//")[1].split("/")[0].rsplit(":", 1)
            migrations = {}
            # One run first (the baseline), then runs cut at the budget.
            for cut in (None, budget):
                proxy = CountingProxy((host, int(port)))
                dest_dir = os.path.join(work, "destination-%s" % cut)
                dest_args = ["--data-dir", dest_dir, "--allow-local-requests",
                             "--export-slice-bytes", str(args.slice_mib << 20)]
                if cut is not None:
                    dest_args += ["--invocation-budget", str(cut)]
                with run.Server(args.bin, dest_dir, log, args=dest_args) as destination:
                    run.progress("migrating through a counting proxy (budget %s)" % cut)
                    source_url = "http://127.0.0.1:%d" % proxy.port
                    seconds, migrated, status = migrate(destination, source_url, "root/big-bundle")
                    # The source's file of this migration (its newest relations export).
                    repository = file_size(
                        server, "/projects/%d/export_relations/download?relation=repository" % project)
                    migrations[cut] = {
                        "seconds": seconds, "sent": proxy.received, "ranges": proxy.ranged,
                        "invocations": (status.get("import_progress") or {}).get("invocations"),
                        "repository": repository,
                    }
                    if cut is not None:
                        run.progress("exporting the migrated project")
                        destination.export(migrated)
                        destination.download_export(migrated, exported)
                    migrations[cut]["rss"] = destination.peak_rss_mb()
                shutil.rmtree(dest_dir, ignore_errors=True)
            source_rss = server.peak_rss_mb()
        run.progress("checking the migrated bundle")
        migrated_same = bundle_digest(exported) == digest
        whole, cut = migrations[None], migrations[budget]
        repository = cut["repository"]
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
        "| migration by a second server, runs cut at the budget (%s invocations of its import) | %.1f | "
        "the same in one run %.1f s | %.2f× |" % (
            cut["invocations"], cut["seconds"], whole["seconds"], cut["seconds"] / whole["seconds"]),
        "",
        "- bundle equal byte for byte after import and export (SHA-256): **%s**" % ("yes" if same else "NO"),
        "- server peak RSS: %.1f MB" % rss,
        "- migration: the source sent %.3f GB (its relations export's files, in %s ranged requests after the "
        "first, and the API's answers) against its %.3f GB `repository` file: **%.3f×** (one run: %.3f×); "
        "bundle equal byte for byte after the migration and an export: **%s**; peak RSS source %.1f MB, "
        "destination %.1f MB (one run: %.1f MB)" % (
            cut["sent"] / 1e9, cut["ranges"], repository / 1e9, cut["sent"] / repository,
            whole["sent"] / whole["repository"], "yes" if migrated_same else "NO", source_rss, cut["rss"], whole["rss"]),
        "",
    ]
    text = "\n".join(lines)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)
    sys.exit(0 if same and migrated_same else 1)


if __name__ == "__main__":
    main()
