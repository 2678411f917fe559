#!/usr/bin/env python3
"""A proxy between the AWS SDK and an emulator (moto) that counts every call
and, on request, injects AWS's faults.

    python3 bench/aws_proxy.py --target http://127.0.0.1:5000 [--port 0]
                               [--fault-rate 0.1] [--seed 1]

It prints `listening on http://127.0.0.1:PORT` and serves until killed.

Counting (`Counter`): per service and operation the calls, items and bytes;
for DynamoDB the write and read units per partition key (item sizes as AWS
documents them, kept in a shadow of each item's size so updates and deletes
are charged like AWS charges them); for S3 the requests per key prefix; for
SQS the messages sent and received. `GET /__counts` answers the counts since
the last `POST /__reset` as JSON (and resets them when `?reset=1`).

Faults (`--fault-rate`): that share of calls, chosen by a seeded random
generator, is answered without reaching the emulator, the way AWS answers
under load: DynamoDB `ProvisionedThroughputExceededException` or
`ThrottlingException`, S3 `503 SlowDown`, SQS `ThrottlingException`, or the
connection is dropped before any answer (a request body is read first, so
the client sees a reset, not a half-sent request). A faulted call never
reached the service, so a retry of it is always safe.

Standard library only.
"""

import argparse
import base64
import collections
import http.client
import http.server
import json
import math
import random
import re
import socket
import sys
import threading
import time
import urllib.parse

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length", "host"}


# --------------------------------------------------------------------------
# DynamoDB item sizes, as AWS documents them
# --------------------------------------------------------------------------


def value_size(value):
    """Bytes of one attribute value (AWS: "Item sizes and formats")."""
    (kind, inner), = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = inner.lstrip("-").replace(".", "").lstrip("0") or "0"
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(base64.b64decode(inner))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(v.encode()) for v in inner)
    if kind == "NS":
        return sum(value_size({"N": v}) for v in inner)
    if kind == "BS":
        return sum(len(base64.b64decode(v)) for v in inner)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in inner.items())
    return 0


def item_size(item):
    return sum(len(name.encode()) + value_size(value) for name, value in (item or {}).items())


def write_units(size):
    return max(1, math.ceil(size / 1024))


def read_units(size, consistent):
    units = max(1, math.ceil(size / 4096))
    return units if consistent else units / 2


def partition_of(key_or_item):
    pk = (key_or_item or {}).get("pk", {})
    return pk.get("S", "?")


def key_of(item):
    return (partition_of(item), (item or {}).get("sk", {}).get("S", ""))


def shown_pk(pk):
    """A partition key with ids replaced, so per-key figures group by kind."""
    return re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}(\.\d+)?", "<id>", re.sub(r"\d+", "<n>", pk)) if pk else pk


# --------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.item_sizes = {}  # (table, pk, sk) -> size: survives resets
        self.reset()

    def reset(self):
        with self.lock:
            self.operations = collections.defaultdict(lambda: collections.Counter())
            self.wcu_by_pk = collections.Counter()
            self.rcu_by_pk = collections.Counter()
            self.s3_by_prefix = collections.defaultdict(lambda: collections.Counter())
            self.calls = []  # (service, operation, bytes sent, bytes received, started, seconds)
            self.faults = collections.Counter()

    def snapshot(self):
        with self.lock:
            return {
                "operations": {"%s.%s" % k: dict(v) for k, v in sorted(self.operations.items())},
                "wcu_by_pk": dict(self.wcu_by_pk.most_common(20)),
                "rcu_by_pk": dict(self.rcu_by_pk.most_common(20)),
                "wcu_max_pk": max(self.wcu_by_pk.values(), default=0),
                "rcu_max_pk": max(self.rcu_by_pk.values(), default=0),
                "s3_by_prefix": {p: dict(c) for p, c in sorted(self.s3_by_prefix.items(), key=lambda i: -sum(i[1].values()))[:20]},
                "calls": list(self.calls),
                "faults": dict(self.faults),
            }

    def note(self, service, operation, **figures):
        counts = self.operations[(service, operation)]
        counts["calls"] += 1
        for name, value in figures.items():
            counts[name] += value

    # DynamoDB -------------------------------------------------------------

    def dynamodb(self, operation, request, response):
        table = request.get("TableName", "")
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            key = request.get("Key") or request.get("Item")
            pk, sk = key_of(key)
            old = self.item_sizes.get((table, pk, sk), 0)
            if operation == "PutItem":
                new = item_size(request["Item"])
            elif operation == "UpdateItem":
                values = request.get("ExpressionAttributeValues", {})
                new = max(old, item_size(key) + sum(value_size(v) for v in values.values()))
            else:
                new = 0
            units = write_units(max(old, new))
            self._written(table, pk, sk, new, units)
            self.note("dynamodb", operation, items=1, wcu=units)
        elif operation == "BatchWriteItem":
            items = units = 0
            for table, requests in request.get("RequestItems", {}).items():
                for entry in requests:
                    if "PutRequest" in entry:
                        item = entry["PutRequest"]["Item"]
                        pk, sk = key_of(item)
                        size = item_size(item)
                        u = write_units(max(size, self.item_sizes.get((table, pk, sk), 0)))
                        self._written(table, pk, sk, size, u)
                    else:
                        pk, sk = key_of(entry["DeleteRequest"]["Key"])
                        u = write_units(self.item_sizes.get((table, pk, sk), 0))
                        self._written(table, pk, sk, 0, u)
                    items += 1
                    units += u
            unprocessed = sum(len(v) for v in (response or {}).get("UnprocessedItems", {}).values())
            self.note("dynamodb", operation, items=items - unprocessed, wcu=units)
        elif operation == "TransactWriteItems":
            items = units = 0
            for entry in request.get("TransactItems", []):
                (kind, body), = entry.items()
                table = body.get("TableName", "")
                key = body.get("Item") or body.get("Key")
                pk, sk = key_of(key)
                size = item_size(body["Item"]) if kind == "Put" else self.item_sizes.get((table, pk, sk), 0)
                u = 2 * write_units(size)  # transactions cost twice
                if kind in ("Put", "Update", "Delete"):
                    self._written(table, pk, sk, size if kind != "Delete" else 0, u)
                else:
                    self.wcu_by_pk[pk] += u
                items += 1
                units += u
            self.note("dynamodb", operation, items=items, wcu=units)
        elif operation == "GetItem":
            consistent = bool(request.get("ConsistentRead"))
            size = item_size((response or {}).get("Item"))
            units = read_units(size, consistent)
            self.rcu_by_pk[partition_of(request.get("Key"))] += units
            self.note("dynamodb", operation, items=1 if (response or {}).get("Item") else 0, rcu=units)
        elif operation in ("Query", "Scan"):
            consistent = bool(request.get("ConsistentRead"))
            items = (response or {}).get("Items", [])
            units = read_units(sum(item_size(i) for i in items), consistent)
            pk = request.get("ExpressionAttributeValues", {}).get(":pk", {}).get("S", "?")
            self.rcu_by_pk[pk] += units
            self.note("dynamodb", operation, items=len(items), rcu=units)
        else:
            self.note("dynamodb", operation)

    def _written(self, table, pk, sk, size, units):
        if size:
            self.item_sizes[(table, pk, sk)] = size
        else:
            self.item_sizes.pop((table, pk, sk), None)
        self.wcu_by_pk[pk] += units

    # S3 -------------------------------------------------------------------

    def s3(self, method, path, query, sent, received, status):
        parts = path.lstrip("/").split("/", 1)
        key = urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""
        if method == "PUT" and "partNumber" in query:
            operation = "UploadPart"
        elif method == "PUT" and not key:
            operation = "CreateBucket"
        elif method == "PUT":
            operation = "PutObject"
        elif method == "POST" and "uploads" in query:
            operation = "CreateMultipartUpload"
        elif method == "POST" and "uploadId" in query:
            operation = "CompleteMultipartUpload"
        elif method == "POST" and "delete" in query:
            operation = "DeleteObjects"
        elif method == "DELETE" and "uploadId" in query:
            operation = "AbortMultipartUpload"
        elif method == "DELETE":
            operation = "DeleteObject"
        elif method == "GET" and not key:
            operation = "ListObjectsV2"
        elif method == "GET":
            operation = "GetObject"
        elif method == "HEAD":
            operation = "HeadObject"
        else:
            operation = method
        prefix = s3_prefix(key)
        tier = "get" if operation in ("GetObject", "HeadObject") else "put"
        self.s3_by_prefix[prefix][tier] += 1
        self.note("s3", operation, bytes_sent=sent, bytes_received=received, **({"errors": 1} if status >= 400 else {}))
        return operation

    # SQS ------------------------------------------------------------------

    def sqs(self, operation, request, response):
        if operation == "SendMessage":
            self.note("sqs", operation, messages=1, bytes_sent=len(request.get("MessageBody", "").encode()))
        elif operation == "SendMessageBatch":
            entries = request.get("Entries", [])
            self.note("sqs", operation, messages=len(entries),
                      bytes_sent=sum(len(e.get("MessageBody", "").encode()) for e in entries))
        elif operation == "ReceiveMessage":
            received = len((response or {}).get("Messages", []))
            operation = operation if received else "ReceiveMessage(empty)"
            self.note("sqs", operation, messages=received)
        else:
            self.note("sqs", operation)
        return operation


def s3_prefix(key):
    """The prefix S3 would partition a key's requests under: its directory
    up to the generation, run or job it belongs to."""
    parts = key.split("/")
    return "/".join(parts[:4]) + "/" if len(parts) > 4 else "/".join(parts[:-1]) + "/"


# --------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------


class Faults:
    def __init__(self, rate, seed):
        self.rate = rate
        self.seed = seed
        # One sequence per service: the faults S3 meets depend on S3's calls
        # only, not on how many DynamoDB calls came in between.
        self.randoms = {}
        self.lock = threading.Lock()

    def pick(self, service):
        """None, or how to fail this call."""
        with self.lock:
            rng = self.randoms.setdefault(service, random.Random(f"{self.seed}-{service}"))
            if self.rate <= 0 or rng.random() >= self.rate:
                return None
            if rng.random() < 0.25:
                return "drop"
            if service == "dynamodb":
                return rng.choice(["ProvisionedThroughputExceededException", "ThrottlingException"])
            return "SlowDown" if service == "s3" else "ThrottlingException"


def fault_answer(service, fault):
    if service == "dynamodb":
        body = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#" + fault,
                           "message": "Rate of requests exceeds the allowed throughput."}).encode()
        return 400, "application/x-amz-json-1.0", body
    if service == "s3":
        body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>Please reduce your request rate.</Message></Error>")
        return 503, "application/xml", body
    body = json.dumps({"__type": "com.amazonaws.sqs#ThrottlingException", "message": "Rate exceeded"}).encode()
    return 400, "application/x-amz-json-1.0", body


def make_handler(target, counter, faults):
    upstream = urllib.parse.urlsplit(target)
    local = threading.local()

    def connection():
        if getattr(local, "conn", None) is None:
            local.conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=600)
        return local.conn

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def read_body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def answer(self, status, headers, body):
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def handle_any(self):
            body = self.read_body()
            if self.path.startswith("/__counts"):
                snapshot = counter.snapshot()
                if "reset=1" in self.path:
                    counter.reset()
                return self.answer(200, [("Content-Type", "application/json")], json.dumps(snapshot).encode())
            if self.path.startswith("/__reset"):
                counter.reset()
                return self.answer(204, [], b"")
            target_header = self.headers.get("X-Amz-Target", "")
            if target_header.startswith("DynamoDB_"):
                service, operation = "dynamodb", target_header.split(".", 1)[1]
            elif target_header.startswith("AmazonSQS."):
                service, operation = "sqs", target_header.split(".", 1)[1]
            else:
                service, operation = "s3", None
            fault = faults.pick(service) if faults else None
            if fault:
                with counter.lock:
                    counter.faults["%s.%s" % (service, fault)] += 1
                if fault == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                return self.answer(*fault_answer_parts(service, fault))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Host"] = upstream.netloc
            headers["Content-Length"] = str(len(body))
            started = time.perf_counter()
            try:
                conn = connection()
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                local.conn = None
                conn = connection()
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            seconds = time.perf_counter() - started
            with counter.lock:
                if service == "s3":
                    split = urllib.parse.urlsplit(self.path)
                    query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
                    operation = counter.s3(self.command, split.path, query, len(body), len(payload), response.status)
                else:
                    try:
                        request = json.loads(body or b"{}")
                        answer = json.loads(payload or b"{}") if response.status < 300 else None
                    except ValueError:
                        request, answer = {}, None
                    if response.status >= 300:
                        counter.note(service, operation + "(error)")
                    elif service == "dynamodb":
                        counter.dynamodb(operation, request, answer)
                    else:
                        operation = counter.sqs(operation, request, answer)
                counter.calls.append((service, operation, len(body), len(payload), started, seconds))
            self.answer(response.status, response.getheaders(), payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    return Handler


def fault_answer_parts(service, fault):
    status, content_type, body = fault_answer(service, fault)
    return status, [("Content-Type", content_type)], body


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that stops reading (a ranged read ending early, a dropped
        # download) is no error of the proxy's.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Proxy:
    """The proxy on a thread: `url` to point the SDK at, `counter`."""

    def __init__(self, target, port=0, fault_rate=0.0, seed=1):
        self.counter = Counter()
        faults = Faults(fault_rate, seed) if fault_rate > 0 else None
        self.server = Server(("127.0.0.1", port), make_handler(target, self.counter, faults))
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="the emulator's endpoint")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    proxy = Proxy(args.target, args.port, args.fault_rate, args.seed)
    print("listening on " + proxy.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
