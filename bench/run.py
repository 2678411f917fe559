#!/usr/bin/env python3
"""The project's benchmark harness: import, export, memory and start-up of the
`local` server on synthetic GitLab-shaped projects, against gzip as baseline.

    python3 bench/run.py [--sizes 10000,100000,200000] [--out bench/RESULTS.md]
                         [--bin target/release/local] [--smoke]

For each size (number of issues) it generates a project archive (seeded, cached
in bench/.work/), then measures, each phase on a fresh server process so that
peak RSS (VmHWM) is per phase:

  a. import of the synthetic archive (fresh data dir);
  b. full export on a new server over the same data dir, and its download;
  c. baselines: `gzip -6` and `pigz -6 -p 2` over exactly the
     exported NDJSON bytes; `gzip -dc` of the exported archive against its
     re-import on fresh servers and data dirs, and the same for the
     synthetic archive (one gzip member, as GitLab writes its exports);
  d. once: start-to-ready time of the binary and of each Lambda function binary
     built for this machine beside it (see function_ready), and the
     target/lambda/*/bootstrap sizes.

It prints a Markdown report and writes it to --out. `--smoke` runs one tiny
size in a few seconds, writing to a temporary file unless --out is given.
The exit status is non-zero if any phase failed. Standard library only.
"""

import argparse
import functools
import glob
import http.server
import itertools
import json
import os
import platform
import queue
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK_DIR = os.path.join(ROOT, "bench", ".work")
TOKEN = "bench-root-token-0123456789"
GENERATOR_VERSION = 1
# A poll's wait grows with the phase's time so far (a fixed 50 ms was a
# quarter of a 0.2 s import): at most POLL_FRACTION of the elapsed time,
# within [POLL_MIN_SECONDS, POLL_MAX_SECONDS].
POLL_MIN_SECONDS = 0.005
POLL_MAX_SECONDS = 0.05
POLL_FRACTION = 0.02
PHASE_TIMEOUT_SECONDS = 3 * 3600
READY_TIMEOUT_SECONDS = 60
READY_RUNS = 5
MB = 1e6
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}

# Targets of the benchmarks issue.
TARGET_EXPORT_VS_GZIP = 1.0
TARGET_IMPORT_VS_GUNZIP = 1.0
# The import and gzip -dc are each timed this many times (median): on a shared
# machine one run of the same import took anywhere from 3.4 to 7 s.
IMPORT_RUNS = 5
# The export, gzip -6 and pigz: the first export after the page cache is
# dropped ran at half speed (0.58 s against 0.29 to 0.33 s).
EXPORT_RUNS = 3
TARGET_EXPORT_VS_PIGZ = 1.0
TARGET_SIZE_VS_GZIP = 0.01
TARGET_RSS_MB = 64
TARGET_FLATNESS_PCT = 10
TARGET_BOOTSTRAP_MB = 10
TARGET_READY_MS = 30

# --------------------------------------------------------------------------
# Synthetic project
# --------------------------------------------------------------------------

VOCABULARY = list(dict.fromkeys("""
the a to of and in is it that for on with this be not as are we when from by
at or should if but can an was will after have has which so error issue fix
test page user when then all only one new more some also there now would need
build pipeline merge request branch commit file project job runner cache log
config value default option setting update version release deploy service api
endpoint response status code message field table column index query database
migration schema model view controller helper spec feature flag label milestone
review approve comment thread discussion reply open close reopen assign author
team group member permission access token session cookie header body payload
json yaml markdown link image upload download import export archive bundle
repository wiki snippet board list card column sort filter search result count
timeout retry failure success warning debug trace stack frame line method class
module package dependency gem library framework container docker image registry
cluster node pod volume secret variable environment staging production review
slow fast memory cpu disk network latency throughput performance regression
expected actual behaviour steps reproduce browser chrome firefox safari mobile
screen button click form input select dropdown modal dialog tooltip icon text
width height margin padding color font size style theme dark light layout
works broken missing wrong invalid empty null undefined duplicate stale
again still already before after while during since until between across
because although however therefore otherwise instead maybe probably likely
please thanks looks good agreed done updated rebased squashed pushed tested
""".split()))
# Zipf-like weights: frequent words are much more common, as in real text.
CUMULATIVE_WEIGHTS = list(itertools.accumulate(1.0 / (rank + 1) ** 0.9 for rank in range(len(VOCABULARY))))
SYSTEM_NOTES = [
    "added ~{n} label",
    "removed ~{n} label",
    "changed milestone to %{n}",
    "mentioned in merge request !{n}",
    "mentioned in commit {sha}",
    "assigned to @user{n}",
    "changed the description",
    "marked this issue as related to #{n}",
    "changed title from **{w}** to **{w} {w}**",
    "closed",
    "reopened",
]
LABEL_COLORS = ["#d9534f", "#428bca", "#5cb85c", "#f0ad4e", "#8e44ad", "#34495e", "#69d100", "#ff0000"]
BASE_TIME = 1_672_531_200  # 2023-01-01T00:00:00Z


@functools.lru_cache(maxsize=None)
def _date(day):
    """The "YYYY-MM-DDT" prefix of day `day` after BASE_TIME."""
    return time.strftime("%Y-%m-%dT", time.gmtime(BASE_TIME + day * 86_400))


def timestamp(seconds):
    """GitLab's timestamp format for BASE_TIME + seconds; the milliseconds
    are derived from the seconds, so they vary but stay deterministic."""
    day, second = divmod(seconds, 86_400)
    return "%s%02d:%02d:%02d.%03dZ" % (_date(day), second // 3600, second // 60 % 60, second % 60, seconds % 1000)


class TextMaker:
    """Deterministic prose, lists and code from the vocabulary: varied text
    that compresses like real issue text rather than one repeated phrase.
    Sentences come from a pool of SENTENCE_POOL distinct ones, drawn at
    random, which keeps generation fast while repeats within gzip's 32 KB
    window stay rare (about 1 in 70 sentences)."""

    SENTENCE_POOL = 1 << 15

    def __init__(self, rng):
        self.rng = rng
        self.pool = [self._new_sentence() for _ in range(self.SENTENCE_POOL)]

    def words(self, count):
        """`count` words, Zipf-weighted."""
        return self.rng.choices(VOCABULARY, cum_weights=CUMULATIVE_WEIGHTS, k=count)

    def _new_sentence(self):
        """A capitalised sentence of 4-18 words, sometimes with code, an issue reference or a path."""
        words = self.words(self.rng.randint(4, 18))
        roll = self.rng.random()
        if roll < 0.15:
            words.insert(self.rng.randrange(len(words)), "`%s_%s`" % tuple(self.words(2)))
        elif roll < 0.25:
            words.append("(#%d)" % self.rng.randint(1, 99999))
        elif roll < 0.3:
            words.append("app/%s/%s_%s.rb:%d" % (*self.words(3), self.rng.randint(1, 900)))
        return " ".join(words).capitalize() + self.rng.choice(".....?!:")

    def sentence(self):
        """A sentence from the pool."""
        return self.pool[self.rng.getrandbits(15)]

    def paragraph(self, size):
        """Sentences up to at least `size` bytes."""
        parts, length = [], 0
        while length < size:
            parts.append(self.sentence())
            length += len(parts[-1]) + 1
        return " ".join(parts)

    def document(self, size):
        """Markdown of about `size` bytes: paragraphs, lists, code blocks."""
        blocks, length = [], 0
        while length < size:
            roll = self.rng.random()
            if roll < 0.15:
                block = "\n".join("- " + self.sentence() for _ in range(self.rng.randint(2, 6)))
            elif roll < 0.25:
                lines = ("    %s(%s)" % ("_".join(self.words(2)), ", ".join(self.words(3))) for _ in range(self.rng.randint(2, 8)))
                block = "```\n" + "\n".join(lines) + "\n```"
            else:
                block = self.paragraph(self.rng.randint(80, 600))
            blocks.append(block)
            length += len(block) + 2
        return "\n\n".join(blocks)

    def sha(self):
        """A random 40-hex-digit commit SHA."""
        return "%040x" % self.rng.getrandbits(160)


class ProjectGenerator:
    """GitLab-shaped records of a synthetic project of `issues` issues, all
    drawn from one random.Random(42) in a fixed order, so the same size always
    gives the same NDJSON bytes."""

    def __init__(self, issues):
        self.issues = issues
        self.rng = random.Random(42)
        self.text = TextMaker(self.rng)
        self.next_id = 1000
        self.labels = self._labels()

    def _id(self):
        """The next database id, unique across relations."""
        self.next_id += 1
        return self.next_id

    def _user(self):
        """A random user id."""
        return self.rng.randint(1, 250)

    def _labels(self):
        """The project's 50 labels (also embedded in every label link, as GitLab exports them)."""
        labels = []
        for i in range(50):
            labels.append({
                "id": 100 + i, "title": "%s::%s" % tuple(self.text.words(2)) if i % 3 == 0 else "%s-%d" % (self.text.words(1)[0], i),
                "color": LABEL_COLORS[i % len(LABEL_COLORS)], "project_id": 1, "created_at": timestamp(i * 60),
                "updated_at": timestamp(i * 60), "template": False, "description": self.text.sentence() if i % 2 else None,
                "group_id": None, "type": "ProjectLabel", "lock_on_merge": False, "priorities": [],
            })
        return labels

    def records(self):
        """(relation, record) pairs in GitLab's export order."""
        for label in self.labels:
            yield "labels", label
        for iid in range(1, max(1, self.issues // 100) + 1):
            yield "milestones", self.milestone(iid)
        for iid in range(1, self.issues + 1):
            yield "issues", self.issue(iid)
        for iid in range(1, max(1, self.issues // 5) + 1):
            yield "merge_requests", self.merge_request(iid)
        for iid in range(1, max(1, self.issues // 2) + 1):
            yield "ci_pipelines", self.pipeline(iid)

    def milestone(self, iid):
        """One milestones.ndjson record."""
        created = iid * 86_400
        return {
            "id": self._id(), "iid": iid, "title": "%s %d.%d" % (self.text.words(1)[0].capitalize(), iid // 10, iid % 10),
            "project_id": 1, "description": self.text.paragraph(self.rng.randint(50, 400)), "due_date": None,
            "start_date": None, "state": self.rng.choice(["active", "closed"]), "created_at": timestamp(created),
            "updated_at": timestamp(created + 3600), "events": [],
        }

    def note(self, noteable_type, noteable_id, created):
        """One note: 30 % system notes, the rest prose."""
        system = self.rng.random() < 0.3
        if system:
            text = self.rng.choice(SYSTEM_NOTES).format(n=self.rng.randint(1, 5000), sha=self.text.sha()[:8], w=self.text.words(1)[0])
        else:
            text = self.text.paragraph(int(self.rng.lognormvariate(4.9, 0.8)))
        author = self._user()
        return {
            "note": text, "noteable_type": noteable_type, "author_id": author, "created_at": timestamp(created),
            "updated_at": timestamp(created + self.rng.randint(0, 7200)), "project_id": 1, "noteable_id": noteable_id,
            "system": system, "type": None if system else self.rng.choice([None, "DiscussionNote"]),
            "discussion_id": self.text.sha(), "confidential": None, "internal": False,
            "author": {"name": "User %d" % author},
            "system_note_metadata": {"action": "label"} if system else None,
        }

    def notes(self, noteable_type, noteable_id, created):
        """0-20 notes, most issues and merge requests having few (mean about 2.5)."""
        count = int(21 * self.rng.random() ** 7)
        return [self.note(noteable_type, noteable_id, created + 600 * (n + 1)) for n in range(count)]

    def label_links(self, target_type, target_id, created):
        """0-2 label links and their resource_label_events."""
        links, events = [], []
        for label in self.rng.sample(self.labels, self.rng.randint(0, 2)):
            links.append({
                "id": self._id(), "label_id": label["id"], "target_id": target_id, "target_type": target_type,
                "created_at": timestamp(created), "updated_at": timestamp(created), "label": label,
            })
            events.append({
                "action": "add", "label_id": label["id"], "user_id": self._user(), "created_at": timestamp(created + 60),
            })
        return links, events

    def issue(self, iid):
        """One issues.ndjson record with its notes, label links and resource events."""
        issue_id = self._id()
        created = iid * 900
        state = "closed" if self.rng.random() < 0.6 else "opened"
        links, label_events = self.label_links("Issue", issue_id, created)
        return {
            "id": issue_id, "iid": iid, "title": " ".join(self.text.words(self.rng.randint(3, 12))).capitalize(),
            "author_id": self._user(), "project_id": 1, "created_at": timestamp(created),
            "updated_at": timestamp(created + 86_400), "description": self.text.document(int(self.rng.lognormvariate(5.9, 0.7))),
            "state": state, "closed_at": timestamp(created + 172_800) if state == "closed" else None,
            "confidential": False, "due_date": None, "lock_version": 0, "time_estimate": 0,
            "relative_position": iid * 513, "discussion_locked": None, "weight": None, "health_status": None,
            "milestone_id": None, "external_key": None, "issue_type": "issue", "work_item_type": {"base_type": "issue"},
            "notes": self.notes("Issue", issue_id, created), "label_links": links,
            "resource_label_events": label_events,
            "resource_state_events": [{"user_id": self._user(), "created_at": timestamp(created + 172_800), "state": "closed",
                                       "source_commit": None, "close_after_error_tracking_resolve": False}] if state == "closed" else [],
            "issue_assignees": [{"user_id": self._user()}] if self.rng.random() < 0.5 else [],
            "award_emoji": [{"name": "thumbsup", "user_id": self._user(), "created_at": timestamp(created + 100)}] if self.rng.random() < 0.2 else [],
            "timelogs": [], "designs": [], "events": [],
        }

    def merge_request(self, iid):
        """One merge_requests.ndjson record: notes, label links, diff metadata (commits, file list, no diffs)."""
        mr_id = self._id()
        created = iid * 4500
        branch = "%d-%s" % (iid, "-".join(self.text.words(3)))
        links, label_events = self.label_links("MergeRequest", mr_id, created)
        commits = [{
            "sha": self.text.sha(), "relative_order": n, "message": self.text.sentence() + "\n",
            "authored_date": timestamp(created - 600 * n), "committed_date": timestamp(created - 600 * n),
            "commit_author": {"name": "User %d" % self._user(), "email": "user@example.com"},
        } for n in range(self.rng.randint(1, 4))]
        files = []
        for n in range(self.rng.randint(1, 6)):
            path = "app/%s/%s_%s.rb" % tuple(self.text.words(3))
            files.append({
                "relative_order": n, "new_file": False, "renamed_file": False, "deleted_file": False, "too_large": False,
                "a_mode": "100644", "b_mode": "100644", "new_path": path, "old_path": path, "binary": False,
            })
        return {
            "id": mr_id, "iid": iid, "target_branch": "main", "source_branch": branch, "source_project_id": 1,
            "author_id": self._user(), "assignee_id": None, "title": " ".join(self.text.words(self.rng.randint(3, 10))).capitalize(),
            "created_at": timestamp(created), "updated_at": timestamp(created + 3600), "state": "merged",
            "merge_status": "can_be_merged", "target_project_id": 1, "description": self.text.document(int(self.rng.lognormvariate(5.6, 0.7))),
            "merge_commit_sha": self.text.sha(), "squash": False, "draft": False, "lock_version": 0,
            "notes": self.notes("MergeRequest", mr_id, created), "label_links": links,
            "resource_label_events": label_events,
            "merge_request_diff": {
                "state": "collected", "base_commit_sha": self.text.sha(), "head_commit_sha": commits[0]["sha"],
                "start_commit_sha": self.text.sha(), "commits_count": len(commits), "files_count": len(files),
                "merge_request_diff_commits": commits, "merge_request_diff_files": files,
            },
            "approvals": [], "events": [], "award_emoji": [],
        }

    def pipeline(self, iid):
        """One ci_pipelines.ndjson record with 1-3 stages of 1-2 builds."""
        created = iid * 1800
        status = self.rng.choice(["success", "success", "success", "failed", "canceled"])
        stages = []
        for position, name in enumerate(["build", "test", "deploy"][: self.rng.randint(1, 3)]):
            builds = [{
                "name": "%s:%s" % (name, self.text.words(1)[0]), "stage": name, "status": status, "type": "Ci::Build",
                "when": "on_success", "allow_failure": False, "created_at": timestamp(created), "started_at": timestamp(created + 10),
                "finished_at": timestamp(created + 200),
            } for _ in range(1 if self.rng.random() < 0.7 else 2)]
            stages.append({"name": name, "status": status, "position": position, "created_at": timestamp(created), "statuses": builds})
        return {
            "id": self._id(), "iid": iid, "project_id": 1, "ref": "main", "sha": self.text.sha(), "before_sha": self.text.sha(),
            "status": status, "source": "push", "tag": False, "yaml_errors": None, "user_id": self._user(),
            "created_at": timestamp(created), "updated_at": timestamp(created + 300), "started_at": timestamp(created + 5),
            "finished_at": timestamp(created + 300), "duration": 295, "stages": stages,
        }


def synthetic_archive(issues):
    """Path and summary ({records, ndjson_bytes, relations, seconds, cached})
    of the synthetic archive of `issues` issues, generated on first use and
    cached in WORK_DIR. Records stream to NDJSON files on disk, which are then
    packed and removed."""
    os.makedirs(WORK_DIR, exist_ok=True)
    stem = os.path.join(WORK_DIR, "synthetic-v%d-%d" % (GENERATOR_VERSION, issues))
    if os.path.exists(stem + ".tar.gz") and os.path.exists(stem + ".json"):
        with open(stem + ".json") as f:
            return stem + ".tar.gz", {**json.load(f), "cached": True}
    progress("generating a synthetic project of %d issues" % issues)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=WORK_DIR) as tmp:
        tree = os.path.join(tmp, "tree", "project")
        os.makedirs(tree)
        with open(os.path.join(tmp, "VERSION"), "w") as f:
            f.write("0.2.4")
        with open(os.path.join(tmp, "tree", "project.json"), "w") as f:
            json.dump({"description": "Synthetic benchmark project", "visibility_level": 0, "archived": False}, f)
        files, relations = {}, {}
        for relation, record in ProjectGenerator(issues).records():
            if relation not in files:
                files[relation] = open(os.path.join(tree, relation + ".ndjson"), "w")
                relations[relation] = 0
            files[relation].write(json.dumps(record, separators=(",", ":")) + "\n")
            relations[relation] += 1
        for f in files.values():
            f.close()
        ndjson_bytes = sum(os.path.getsize(os.path.join(tree, r + ".ndjson")) for r in relations)
        partial = stem + ".tar.gz.partial"
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            for name in ["VERSION", "tree/project.json"] + ["tree/project/%s.ndjson" % r for r in relations]:
                tar.add(os.path.join(tmp, name), arcname=name)
    summary = {"records": sum(relations.values()), "ndjson_bytes": ndjson_bytes, "relations": relations,
               "seconds": time.perf_counter() - start}
    with open(stem + ".json", "w") as f:
        json.dump(summary, f)
    os.replace(partial, stem + ".tar.gz")
    return stem + ".tar.gz", {**summary, "cached": False}


def ndjson_of(archive, concatenation=None):
    """Sizes and line counts of the archive's tree/project/*.ndjson files;
    with `concatenation`, also writes their bytes, in archive order, there."""
    pattern = re.compile(r"^(?:\./)?tree/project/([a-z0-9_]+)\.ndjson$")
    relations, total = {}, 0
    out = open(concatenation, "wb") if concatenation else None
    try:
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                match = pattern.match(member.name)
                if not match or not member.isfile():
                    continue
                lines, last = 0, b"\n"
                source = tar.extractfile(member)
                while chunk := source.read(1 << 20):
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                    if out:
                        out.write(chunk)
                relations[match.group(1)] = lines + (last != b"\n")
                total += member.size
    finally:
        if out:
            out.close()
    return {"records": sum(relations.values()), "ndjson_bytes": total, "relations": relations}


# --------------------------------------------------------------------------
# Server and API
# --------------------------------------------------------------------------


def log_tail(path, size=1500):
    """The end of a server log, without colour codes, or "(empty)"."""
    if not os.path.exists(path):
        return "(empty)"
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - size))
        text = f.read().decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip() or "(empty)"


class PhaseError(Exception):
    """A phase could not complete: the server errored, failed or timed out."""


def multipart_body(fields, archive):
    """A `multipart/form-data` body of `fields` and `archive` as `file`,
    streamed in 1 MiB chunks, and its headers."""
    boundary = uuid.uuid4().hex
    head = b"".join(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, k, v)).encode()
                    for k, v in fields.items())
    head += ('--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n'
             "Content-Type: application/gzip\r\n\r\n" % (boundary, os.path.basename(archive))).encode()
    tail = ("\r\n--%s--\r\n" % boundary).encode()

    def body():
        yield head
        with open(archive, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        yield tail

    headers = {"Content-Type": "multipart/form-data; boundary=" + boundary,
               "Content-Length": str(len(head) + os.path.getsize(archive) + len(tail))}
    return body(), headers


class Server:
    """A `local serve` process on `data_dir`, as a context manager. Its stdout
    is read by a thread (to find the API root URL, `base`, and "ready", and so
    the pipe never fills); its stderr goes to `log_path`."""

    def __init__(self, binary, data_dir, log_path, args=None, env=None):
        self.binary, self.data_dir, self.log_path = binary, data_dir, log_path
        self.args = args if args is not None else ["--data-dir", data_dir]
        self.extra_env = env or {}
        self.lines = queue.Queue()
        self.base = None
        self.ready_seconds = None

    def __enter__(self):
        """Starts the server and waits for its "ready" line (timed from Popen)."""
        env = {**os.environ, "LOCAL_ROOT_TOKEN": TOKEN, "RUST_LOG": "warn", "EXPORT_RATE_LIMIT_PER_MINUTE": "0",
               "DOWNLOAD_RATE_LIMIT_PER_MINUTE": "0",
               **self.extra_env}
        with open(self.log_path, "ab") as log:
            start = time.perf_counter()
            self.process = subprocess.Popen(
                [self.binary, "serve", "--bind", "127.0.0.1:0"] + self.args,
                env=env, stdout=subprocess.PIPE, stderr=log,
            )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        deadline = start + READY_TIMEOUT_SECONDS
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                self.__exit__()
                raise PhaseError("server printed no \"ready\" within %d s" % READY_TIMEOUT_SECONDS)
            if line is None:
                raise PhaseError("server exited (status %s) before \"ready\"" % self.process.wait())
            if line == "ready":
                self.ready_seconds = time.perf_counter() - start
                break
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                self.base = match.group(1)
        if not self.base:
            self.__exit__()
            raise PhaseError("server was ready without a \"listening on\" line")
        return self

    def _read_stdout(self):
        """Queues each stdout line, then None at EOF."""
        for raw in self.process.stdout:
            self.lines.put(raw.decode(errors="replace").strip())
        self.lines.put(None)

    def __exit__(self, *exc):
        """Stops the server (SIGTERM, then SIGKILL after 30 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def peak_rss_mb(self):
        """VmHWM of the server process so far, in MB."""
        with open("/proc/%d/status" % self.process.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
        raise PhaseError("no VmHWM in /proc/%d/status" % self.process.pid)

    def cpu_seconds(self):
        """User + system CPU time of the server process so far."""
        with open("/proc/%d/stat" % self.process.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def request(self, method, path, body=None, headers=None):
        """One API call; the decoded JSON answer. HTTP errors become PhaseError
        with the status and body, so they are reported as the server said them."""
        req = urllib.request.Request(self.base + path, data=body, method=method, headers={"PRIVATE-TOKEN": TOKEN, **(headers or {})})
        try:
            with urllib.request.urlopen(req) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raise PhaseError("%s %s answered %d: %s" % (method, path, err.code, err.read().decode(errors="replace")[:500])) from None

    def poll(self, path, field, done, failed="failed"):
        """GETs `path` until `field` is `done` (returns the answer) or
        `failed` (raises), waiting longer between polls as the phase runs."""
        start = time.perf_counter()
        deadline = start + PHASE_TIMEOUT_SECONDS
        while time.perf_counter() < deadline:
            answer = self.request("GET", path)
            if answer.get(field) == done:
                return answer
            if answer.get(field) == failed:
                raise PhaseError("%s: %s is %s: %s" % (path, field, failed, json.dumps(answer)[:1500]))
            elapsed = time.perf_counter() - start
            time.sleep(min(POLL_MAX_SECONDS, max(POLL_MIN_SECONDS, POLL_FRACTION * elapsed)))
        raise PhaseError("%s: %s not %s after %d s" % (path, field, done, PHASE_TIMEOUT_SECONDS))

    def import_archive(self, archive, path):
        """Uploads `archive` (streamed, multipart) as project `path` and waits
        for the import: (project id, seconds from POST to finished, status)."""
        body, headers = multipart_body({"path": path}, archive)
        start = time.perf_counter()
        project = self.request("POST", "/projects/import", body, headers)
        status = self.poll("/projects/%d/import" % project["id"], "import_status", "finished")
        return project["id"], time.perf_counter() - start, status

    def export(self, project_id):
        """Schedules a full export and waits for it: seconds from POST to finished."""
        start = time.perf_counter()
        self.request("POST", "/projects/%d/export" % project_id)
        self.poll("/projects/%d/export" % project_id, "export_status", "finished")
        return time.perf_counter() - start

    def download_export(self, project_id, destination):
        """Follows the download route's redirect and saves the archive: seconds."""
        start = time.perf_counter()
        req = urllib.request.Request(self.base + "/projects/%d/export/download" % project_id, headers={"PRIVATE-TOKEN": TOKEN})
        try:
            with urllib.request.urlopen(req) as resp, open(destination, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except urllib.error.HTTPError as err:
            raise PhaseError("export download answered %d: %s" % (err.code, err.read().decode(errors="replace")[:500])) from None
        return time.perf_counter() - start


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------


def progress(message):
    """A progress line on stderr (stdout is the report)."""
    print("[bench] " + message, file=sys.stderr, flush=True)


def timed(command):
    """Wall seconds of `command` with its stdout to /dev/null."""
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def median_timed(command, runs):
    """Median wall seconds of `command` over `runs` runs."""
    return statistics.median(timed(command) for _ in range(runs))


def median_run(runs):
    """The run of median seconds, with every run's seconds and the highest
    peak RSS of them all."""
    median = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]
    return {**median, "runs": [run["seconds"] for run in runs],
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs)}


def gzip6_size_of_tar(archive):
    """Bytes of `gzip -6` over the tar inside `archive`: the size to hold our
    archive against, on the same bytes."""
    gunzip = subprocess.Popen(["gzip", "-dc", archive], stdout=subprocess.PIPE)
    gzip = subprocess.Popen(["gzip", "-6", "-c"], stdin=gunzip.stdout, stdout=subprocess.PIPE)
    gunzip.stdout.close()
    size = 0
    for block in iter(lambda: gzip.stdout.read(1 << 20), b""):
        size += len(block)
    if gzip.wait() != 0 or gunzip.wait() != 0:
        raise PhaseError("gzip -6 over the exported tar failed")
    return size


def check_records(what, expected, got):
    """Raises unless the per-relation record counts `got` match `expected`."""
    differing = {r: (n, got.get(r, 0)) for r, n in expected.items() if got.get(r, 0) != n}
    if differing:
        raise PhaseError("%s: record counts differ (relation: expected, got): %s" % (what, differing))


def check_imported(status, expected):
    """Raises if the import status counts other than `expected` records
    (`records_imported`; builds without the counter are not checked)."""
    if status.get("records_imported", expected) != expected:
        raise PhaseError("import finished with records_imported %s, expected %d" % (status["records_imported"], expected))


def bench_size(binary, issues):
    """All phases for one size: a dict of results per phase; a phase that
    failed holds {"error": ...} and the phases depending on it are skipped."""
    results = {"issues": issues}
    archive, generated = synthetic_archive(issues)
    results["input"] = {**generated, "archive_bytes": os.path.getsize(archive)}
    with tempfile.TemporaryDirectory(dir=WORK_DIR, prefix="run-%d-" % issues) as tmp:
        data, redata = os.path.join(tmp, "data"), os.path.join(tmp, "data-reimport")
        exported, concatenated = os.path.join(tmp, "export.tar.gz"), os.path.join(tmp, "export.ndjson")

        def phase(name, run):
            """Runs `run(server_log_path)` into results[name]; True if it succeeded."""
            progress("%d issues: %s" % (issues, name))
            log = os.path.join(tmp, name + ".log")
            os.sync()  # so no earlier writeback (generation, downloads) competes with the timed phase
            try:
                results[name] = run(log)
            except (PhaseError, OSError, subprocess.CalledProcessError, ValueError, KeyError, tarfile.TarError) as err:
                results[name] = {"error": "%s: %s (server log: %s)" % (type(err).__name__, err, log_tail(log))}
                progress("%d issues: %s FAILED: %s" % (issues, name, results[name]["error"]))
            return "error" not in results[name]

        def run_import(log):
            """a. The synthetic archive into a fresh data dir."""
            with Server(binary, data, log) as server:
                project, seconds, status = server.import_archive(archive, "bench")
                check_imported(status, generated["records"])
                return {"project": project, "seconds": seconds, "cpu_seconds": server.cpu_seconds(),
                        "peak_rss_mb": server.peak_rss_mb()}

        def run_export(log):
            """b. Export and download on a new server over the import's data
            dir, EXPORT_RUNS times: the median export, the last download."""
            runs = []
            for _ in range(EXPORT_RUNS):
                with Server(binary, data, log) as server:
                    project = results["import"]["project"]
                    seconds = server.export(project)
                    cpu = server.cpu_seconds()
                    download = server.download_export(project, exported)
                    runs.append({"seconds": seconds, "cpu_seconds": cpu, "download_seconds": download,
                                 "peak_rss_mb": server.peak_rss_mb()})
            content = ndjson_of(exported, concatenated)
            check_records("export", generated["relations"], content["relations"])
            return {**median_run(runs), "archive_bytes": os.path.getsize(exported), **content}

        def run_baseline(_log):
            """c. gzip and pigz over the exported bytes; gzip -6's size over our archive's tar."""
            baseline = {"gzip6_seconds": median_timed(["gzip", "-6", "-c", concatenated], EXPORT_RUNS),
                        "pigz6_seconds": median_timed(["pigz", "-6", "-p", "2", "-c", concatenated], EXPORT_RUNS),
                        "gunzip_seconds": median_timed(["gzip", "-dc", exported], IMPORT_RUNS),
                        "gzip6_archive_bytes": gzip6_size_of_tar(exported)}
            return baseline

        def repeated_imports(source, records, path, log):
            """`source` imported IMPORT_RUNS times, each into a fresh data dir:
            the median run, and every run's seconds."""
            runs = []
            for n in range(IMPORT_RUNS):
                fresh = "%s-%d" % (redata, n)
                with Server(binary, fresh, log) as server:
                    project, seconds, status = server.import_archive(source, path)
                    check_imported(status, records)
                    runs.append({"seconds": seconds, "cpu_seconds": server.cpu_seconds(),
                                 "peak_rss_mb": server.peak_rss_mb()})
                shutil.rmtree(fresh)
                os.sync()
            return median_run(runs)

        def run_reimport(log):
            """c. Our exported archive into fresh data dirs."""
            return repeated_imports(exported, results["export"]["records"], "bench-reimport", log)

        def run_one_member(log):
            """c. The synthetic archive (one gzip member, as GitLab writes its
            exports) into fresh data dirs, against gzip -dc of it."""
            gunzip = median_timed(["gzip", "-dc", archive], IMPORT_RUNS)
            return {**repeated_imports(archive, generated["records"], "bench-one-member", log),
                    "gunzip_seconds": gunzip}

        if phase("import", run_import) and phase("export", run_export):
            phase("baseline", run_baseline)
            phase("reimport", run_reimport)
            phase("one_member", run_one_member)
    return results


def startup(binary):
    """Median seconds from Popen to "ready" over READY_RUNS fresh data dirs,
    and every run's figure."""
    runs = []
    for _ in range(READY_RUNS):
        with tempfile.TemporaryDirectory(dir=WORK_DIR, prefix="ready-") as tmp:
            log = os.path.join(tmp, "server.log")
            try:
                with Server(binary, os.path.join(tmp, "data"), log) as server:
                    runs.append(server.ready_seconds)
            except PhaseError as err:
                return {"error": "PhaseError: %s (server log: %s)" % (err, log_tail(log))}
    return {"median": statistics.median(runs), "runs": runs}


FUNCTIONS = ["schedule", "status", "download", "import", "worker", "scheduled-export"]
RUNTIME_NEXT = "/2018-06-01/runtime/invocation/next"


def function_ready(binary):
    """Median seconds from Popen to a Lambda function's first request for an
    event (the moment Lambda would hand it one), over READY_RUNS, against a
    stub Runtime API on 127.0.0.1. No ROOT_TOKEN is set, so start-up makes no
    AWS call (with one, a cold start adds a DynamoDB read)."""
    runs = []
    for _ in range(READY_RUNS):
        asked = threading.Event()
        arrival = []

        class Runtime(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == RUNTIME_NEXT and not arrival:
                    arrival.append(time.perf_counter())
                    asked.set()
                # No event ever comes: the process is stopped first.
                asked.wait()
                time.sleep(1)

            def log_message(self, *args):
                pass

        runtime = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Runtime)
        runtime.daemon_threads = True
        threading.Thread(target=runtime.serve_forever, daemon=True).start()
        env = {k: v for k, v in os.environ.items() if k != "ROOT_TOKEN"}
        env.update({
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % runtime.server_address[1],
            "AWS_LAMBDA_FUNCTION_NAME": os.path.basename(binary), "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_LOG_GROUP_NAME": "bench",
            "AWS_LAMBDA_LOG_STREAM_NAME": "bench", "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench", "TABLE_NAME": "bench", "BUCKET_NAME": "bench",
            "QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/bench", "RUST_LOG": "warn",
        })
        start = time.perf_counter()
        process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if not asked.wait(READY_TIMEOUT_SECONDS):
                return {"error": "no request for an event within %d s" % READY_TIMEOUT_SECONDS}
            runs.append(arrival[0] - start)
        finally:
            process.kill()
            _, stderr = process.communicate()
            runtime.shutdown()
            runtime.server_close()
        if process.returncode not in (-9, 0) and not runs:
            return {"error": "exited %s: %s" % (process.returncode, stderr.decode(errors="replace")[-500:])}
    return {"median": statistics.median(runs), "runs": runs}


def functions_ready(binary):
    """{function: function_ready(...)} for each function binary beside `binary`."""
    found = [(name, os.path.join(os.path.dirname(binary), name)) for name in FUNCTIONS]
    return {name: function_ready(path) for name, path in found if os.access(path, os.X_OK)}


def lambda_artifacts():
    """(function, bytes, ELF architecture) of each target/lambda/*/bootstrap."""
    artifacts = []
    for path in sorted(glob.glob(os.path.join(ROOT, "target", "lambda", "*", "bootstrap"))):
        with open(path, "rb") as f:
            header = f.read(20)
        machine = int.from_bytes(header[18:20], "little") if header[:4] == b"\x7fELF" else None
        artifacts.append((os.path.basename(os.path.dirname(path)), os.path.getsize(path), ELF_MACHINES.get(machine, "unknown")))
    return artifacts


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def machine():
    """CPU model, core count and memory from /proc."""
    model, memory = platform.machine(), "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = "%.1f GB" % (int(line.split()[1]) * 1024 / 1e9)
    return "%s, %d cores (nproc), %s RAM, %s" % (model, len(os.sched_getaffinity(0)), memory, platform.platform())


def table(headers, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def phase_rows(results, name, row):
    """One row per size: `row(result)` or the phase's error."""
    rows = []
    for r in results:
        phase = r.get(name)
        if phase is None:
            rows.append(["%d" % r["issues"], "not run (an earlier phase failed)"])
        elif "error" in phase:
            rows.append(["%d" % r["issues"], "FAILED: " + phase["error"].replace("|", "\\|").replace("\n", " ")])
        else:
            rows.append(["%d" % r["issues"]] + row(r, phase))
    return rows


def flatness(results, name):
    """Peak RSS of the largest size against the smallest, in percent."""
    done = [r for r in results if "peak_rss_mb" in r.get(name, {})]
    if len(done) < 2:
        return None
    small, large = done[0][name]["peak_rss_mb"], done[-1][name]["peak_rss_mb"]
    return (large - small) / small * 100, done[0]["issues"], done[-1]["issues"]


def target_line(label, met, figure):
    """A Targets bullet: met, missed or n/a (met is None), with the figure."""
    state = "n/a" if met is None else ("met" if met else "missed")
    return "- %s: **%s** (%s)" % (label, state, figure)


def report(command, binary, results, ready, functions, artifacts):
    """The whole Markdown report."""
    ok = [r for r in results if all(name in r and "error" not in r[name] for name in ("export", "baseline", "reimport"))]
    out = ["# Benchmarks", ""]
    out += ["- Machine: " + machine(),
            "- Date: " + datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "- Command: `%s`" % command,
            "- Binary: `%s` (%.1f MB, built %s)" % (os.path.relpath(binary, ROOT), os.path.getsize(binary) / MB,
                                                    datetime.fromtimestamp(os.path.getmtime(binary), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
            "- Server: `local serve` defaults (2 workers), `RUST_LOG=warn`, `EXPORT_RATE_LIMIT_PER_MINUTE=0`; "
            "each phase on a fresh process: peak RSS = its VmHWM, server CPU = its user + system time (all threads); "
            "`sync` before each phase; MB = 10^6 bytes", ""]

    out += ["## Synthetic input", "",
            "Seeded generator (`random.Random(42)`): issues with notes, label links and resource events; "
            "merge requests (N/5) with notes and diff metadata; milestones (N/100); 50 labels; pipelines (N/2).", "",
            table(["issues", "records (NDJSON lines)", "NDJSON MB", "archive MB (gzip -1)", "generation s"],
                  [["%d" % r["issues"], r["input"]["records"], "%.1f" % (r["input"]["ndjson_bytes"] / MB),
                    "%.1f" % (r["input"]["archive_bytes"] / MB),
                    "%.1f%s" % (r["input"]["seconds"], " (cached)" if r["input"]["cached"] else "")] for r in results]), ""]

    out += ["## a. Import of the synthetic archive", "",
            "Fresh server and data dir; POST /projects/import (streamed upload) to `import_status` finished, polled every 2% of the time so far (5 to 50 ms).", "",
            table(["issues", "wall s", "server CPU s", "records/s", "NDJSON MB/s", "peak RSS MB"],
                  phase_rows(results, "import", lambda r, p: [
                      "%.2f" % p["seconds"], "%.2f" % p["cpu_seconds"], "%.0f" % (r["input"]["records"] / p["seconds"]),
                      "%.1f" % (r["input"]["ndjson_bytes"] / MB / p["seconds"]), "%.1f" % p["peak_rss_mb"]])), ""]

    out += ["## b. Full export", "",
            "%d times, each on a new server on the import's data dir; POST /projects/:id/export to `export_status` "
            "finished; then the download (streamed, or a followed 302). Export s, its CPU and download s are "
            "the median run's; peak RSS the highest and covers export and download." % EXPORT_RUNS, "",
            table(["issues", "records", "NDJSON MB", "archive MB", "export s", "export runs s", "server CPU s", "NDJSON MB/s", "records/s", "download s", "peak RSS MB"],
                  phase_rows(results, "export", lambda r, p: [
                      p["records"], "%.1f" % (p["ndjson_bytes"] / MB), "%.1f" % (p["archive_bytes"] / MB), "%.2f" % p["seconds"],
                      ", ".join("%.2f" % s for s in p.get("runs", [p["seconds"]])), "%.2f" % p["cpu_seconds"],
                      "%.1f" % (p["ndjson_bytes"] / MB / p["seconds"]), "%.0f" % (p["records"] / p["seconds"]),
                      "%.2f" % p["download_seconds"], "%.1f" % p["peak_rss_mb"]])), ""]

    def gzip_row(r, p):
        """A row of the export-against-gzip table."""
        export = r["export"]
        mb = export["ndjson_bytes"] / MB
        row = ["%.1f" % mb, "%.2f" % export["seconds"], "%.2f" % p["gzip6_seconds"], "%.1f" % (mb / export["seconds"]),
               "%.1f" % (mb / p["gzip6_seconds"]), "%.2f×" % (p["gzip6_seconds"] / export["seconds"])]
        row += ["%.2f" % p["pigz6_seconds"], "%.2f×" % (p["pigz6_seconds"] / export["seconds"])]
        if "gzip6_archive_bytes" in p:
            row += ["%.2f%%" % (100.0 * (export["archive_bytes"] / p["gzip6_archive_bytes"] - 1))]
        return row

    out += ["## c. Export against gzip -6 and pigz -6 -p 2", "",
            "`gzip -6 -c` and `pigz -6 -p 2 -c` over exactly the exported archive's NDJSON bytes (concatenated) "
            "to /dev/null, wall time, medians of %d runs (the export's too). Ratio = our MB/s ÷ theirs. Size: our archive against "
            "`gzip -6` over the same tar bytes." % EXPORT_RUNS, "",
            table(["issues", "NDJSON MB", "export s", "gzip -6 s", "ours MB/s", "gzip -6 MB/s", "ours / gzip -6",
                   "pigz -6 -p 2 s", "ours / pigz", "size vs gzip -6"],
                  phase_rows(results, "baseline", gzip_row)), ""]

    out += ["## c. Import against gzip -dc", "",
            "Each archive imported as a new project, %d times, each on a fresh server and data dir, against "
            "`gzip -dc` of the same archive to /dev/null (also %d times): import s, its server CPU and "
            "gzip -dc s are medians. Ratio = gzip -dc s ÷ import s. Our export is one gzip member "
            "deflated pigz-style in 1 MiB pieces; the synthetic archive one member from a single "
            "`gzip -1` stream." % (IMPORT_RUNS, IMPORT_RUNS), "",
            table(["issues", "archive", "archive MB", "records", "import s", "import runs s", "server CPU s", "records/s",
                   "gzip -dc s", "ours / gzip -dc", "peak RSS MB"],
                  phase_rows(results, "reimport", lambda r, p: [
                      "our export", "%.1f" % (r["export"]["archive_bytes"] / MB), r["export"]["records"], "%.2f" % p["seconds"],
                      ", ".join("%.2f" % s for s in p.get("runs", [p["seconds"]])), "%.2f" % p["cpu_seconds"],
                      "%.0f" % (r["export"]["records"] / p["seconds"]), "%.2f" % r["baseline"]["gunzip_seconds"],
                      "%.2f×" % (r["baseline"]["gunzip_seconds"] / p["seconds"]), "%.1f" % p["peak_rss_mb"]])
                  + phase_rows(results, "one_member", lambda r, p: [
                      "synthetic, one member", "%.1f" % (r["input"]["archive_bytes"] / MB), r["input"]["records"],
                      "%.2f" % p["seconds"], ", ".join("%.2f" % s for s in p["runs"]), "%.2f" % p["cpu_seconds"],
                      "%.0f" % (r["input"]["records"] / p["seconds"]), "%.2f" % p["gunzip_seconds"],
                      "%.2f×" % (p["gunzip_seconds"] / p["seconds"]), "%.1f" % p["peak_rss_mb"]])), ""]

    flat = {name: flatness(results, name) for name in ("export", "import", "reimport")}
    out += ["## Memory flatness", ""]
    for name, label in (("export", "export"), ("import", "import (synthetic)"), ("reimport", "import (our export)")):
        f = flat[name]
        out.append("- %s: " % label + ("needs two sizes" if f is None else "%+.1f%% peak RSS at %d issues vs %d" % (f[0], f[2], f[1])))
    out.append("")

    out += ["## d. Start-up and Lambda artifacts", ""]
    if "error" in ready:
        out += ["- `local serve` start to \"ready\": FAILED: " + ready["error"], ""]
    else:
        out += ["- `local serve` start to \"ready\" (fresh data dir, median of %d): **%.1f ms** (runs: %s)"
                % (READY_RUNS, ready["median"] * 1e3, ", ".join("%.1f" % (s * 1e3) for s in ready["runs"])), ""]
    if functions:
        out += ["Lambda function binaries built for this machine (`%s/<function>`), start to their first request "
                "for an event from a stub Lambda Runtime API, median of %d (no `ROOT_TOKEN`, so no AWS call):"
                % (os.path.relpath(os.path.dirname(binary), ROOT), READY_RUNS), "",
                table(["function", "ready ms", "runs ms"],
                      [[name, "FAILED: " + r["error"], ""] if "error" in r else
                       [name, "%.1f" % (r["median"] * 1e3), ", ".join("%.1f" % (s * 1e3) for s in r["runs"])]
                       for name, r in functions.items()]), ""]
    else:
        out += ["No function binary beside the local one (build them with `cargo build --release -p %s`)."
                % " -p ".join(FUNCTIONS), ""]
    if artifacts:
        out += [table(["function", "bootstrap MB", "architecture"],
                      [[name, "%.1f" % (size / MB), arch] for name, size, arch in artifacts]),
                "", "Bootstraps are only sized: they are not built for this machine (%s), so not started." % platform.machine(), ""]
    else:
        out += ["No `target/lambda/*/bootstrap` (build them with `bash infra/build-lambdas.sh`).", ""]

    out += ["## Targets", ""]
    if ok:
        largest = ok[-1]
        export_ratio = largest["baseline"]["gzip6_seconds"] / largest["export"]["seconds"]
        out.append(target_line("export ≥ %.1f× gzip -6" % TARGET_EXPORT_VS_GZIP, export_ratio >= TARGET_EXPORT_VS_GZIP,
                               "%.2f× at %d issues" % (export_ratio, largest["issues"])))
        for r in ok:
            pigz_ratio = r["baseline"]["pigz6_seconds"] / r["export"]["seconds"]
            out.append(target_line("export ≥ %.1f× pigz -6 -p 2" % TARGET_EXPORT_VS_PIGZ, pigz_ratio >= TARGET_EXPORT_VS_PIGZ,
                                   "%.2f× at %d issues" % (pigz_ratio, r["issues"])))
        growth = max(r["export"]["archive_bytes"] / r["baseline"]["gzip6_archive_bytes"] - 1 for r in ok)
        out.append(target_line("archive within %.0f%% of gzip -6" % (100 * TARGET_SIZE_VS_GZIP), growth <= TARGET_SIZE_VS_GZIP,
                               "%+.2f%% at most" % (100 * growth)))
        for r in ok:
            import_ratio = r["baseline"]["gunzip_seconds"] / r["reimport"]["seconds"]
            out.append(target_line("import ≥ %.1f× gzip -dc" % TARGET_IMPORT_VS_GUNZIP, import_ratio >= TARGET_IMPORT_VS_GUNZIP,
                                   "%.2f× at %d issues, re-importing our export (medians)" % (import_ratio, r["issues"])))
        for r in results:
            one = r.get("one_member", {})
            if "seconds" in one:
                ratio = one["gunzip_seconds"] / one["seconds"]
                out.append(target_line("import ≥ %.1f× gzip -dc" % TARGET_IMPORT_VS_GUNZIP, ratio >= TARGET_IMPORT_VS_GUNZIP,
                                       "%.2f× at %d issues, one-member synthetic archive (medians)" % (ratio, r["issues"])))
    else:
        out.append("- export and import throughput: **n/a** (no size completed every phase)")
    peaks = [(r[name]["peak_rss_mb"], name, r["issues"]) for r in results for name in ("import", "export", "reimport", "one_member")
             if "peak_rss_mb" in r.get(name, {})]
    if peaks:
        peak = max(peaks)
        out.append(target_line("peak RSS ≤ %d MB" % TARGET_RSS_MB, peak[0] <= TARGET_RSS_MB,
                               "highest %.1f MB: %s at %d issues" % peak))
    flats = {name: f for name, f in flat.items() if f is not None}
    out.append(target_line("peak RSS flat within %d%% (smallest vs largest size)" % TARGET_FLATNESS_PCT,
                           all(abs(f[0]) <= TARGET_FLATNESS_PCT for f in flats.values()) if flats else None,
                           ", ".join("%s %+.1f%%" % (name, f[0]) for name, f in flats.items()) or "needs two sizes"))
    if artifacts:
        biggest = max(artifacts, key=lambda a: a[1])
        out.append(target_line("bootstrap ≤ %d MB" % TARGET_BOOTSTRAP_MB, biggest[1] / MB <= TARGET_BOOTSTRAP_MB,
                               "largest %.1f MB (%s)" % (biggest[1] / MB, biggest[0])))
    else:
        out.append(target_line("bootstrap ≤ %d MB" % TARGET_BOOTSTRAP_MB, None, "no bootstrap built"))
    if "error" in ready:
        out.append(target_line("ready ≤ %d ms" % TARGET_READY_MS, None, "start-up failed"))
    else:
        out.append(target_line("ready ≤ %d ms" % TARGET_READY_MS, ready["median"] * 1e3 <= TARGET_READY_MS,
                               "median %.1f ms, local binary" % (ready["median"] * 1e3)))
    timed_functions = {name: r for name, r in functions.items() if "error" not in r}
    if timed_functions:
        slowest = max(timed_functions.items(), key=lambda item: item[1]["median"])
        out.append(target_line("function ready ≤ %d ms" % TARGET_READY_MS,
                               slowest[1]["median"] * 1e3 <= TARGET_READY_MS,
                               "slowest median %.1f ms (%s), built for this machine" % (slowest[1]["median"] * 1e3, slowest[0])))

    failures = ["%d issues, %s: %s" % (r["issues"], name, p["error"])
                for r in results for name, p in r.items() if isinstance(p, dict) and "error" in p]
    if "error" in ready:
        failures.append("start-up: " + ready["error"])
    failures += ["%s start-up: %s" % (name, r["error"]) for name, r in functions.items() if "error" in r]
    if failures:
        out += ["", "## Failures", ""] + ["- " + f for f in failures]
    return "\n".join(out) + "\n"


SECTION = re.compile(r"<!-- (\w+) begin -->.*?<!-- \1 end -->\n?", re.S)


def write_keeping_sections(path, text):
    """Writes the report to `path`, keeping the sections other benches keep
    in it (`<!-- name begin -->` ... `<!-- name end -->`, e.g. aws_model.py's)."""
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [m.group(0) for m in SECTION.finditer(f.read())]
    with open(path, "w") as f:
        f.write(text + "".join("\n" + section for section in kept))


def replace_section(path, name, body):
    """Puts `body` in the file's `name` section, replacing the one there."""
    section = "<!-- %s begin -->\n%s<!-- %s end -->\n" % (name, body, name)
    text = open(path).read() if os.path.exists(path) else ""
    match = re.search(r"<!-- %s begin -->.*?<!-- %s end -->\n?" % (name, name), text, re.S)
    text = text[:match.start()] + section + text[match.end():] if match else text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)


def main():
    """Parses the command line, runs every size and start-up, writes the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,200000", help="issue counts, comma-separated")
    parser.add_argument("--out", help="report file (default bench/RESULTS.md; with --smoke a temporary file)")
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "local"), help="the local server binary")
    parser.add_argument("--smoke", action="store_true", help="one tiny size (200 issues), in a few seconds")
    args = parser.parse_args()
    sizes = [200] if args.smoke else sorted(int(s) for s in args.sizes.split(","))
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit("%s not found: build it with `cargo build --release --bin local`" % binary)
    for tool in ("gzip", "pigz"):
        if not shutil.which(tool):
            sys.exit("%s not found: the baselines need it (`apt-get install %s`)" % (tool, tool))
    if args.out:
        out = args.out
    elif args.smoke:
        out = tempfile.NamedTemporaryFile(prefix="bench-smoke-", suffix=".md", delete=False).name
    else:
        out = os.path.join(ROOT, "bench", "RESULTS.md")
    os.makedirs(WORK_DIR, exist_ok=True)

    results = [bench_size(binary, issues) for issues in sizes]
    progress("start-up time")
    ready = startup(binary)
    functions = functions_ready(binary)
    command = "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    text = report(command, binary, results, ready, functions, lambda_artifacts())
    print(text)
    write_keeping_sections(out, text)
    progress("report written to " + out)
    if ("error" in ready or any("error" in r for r in functions.values())
            or any("error" in p for r in results for p in r.values() if isinstance(p, dict))):
        sys.exit(1)


if __name__ == "__main__":
    main()
