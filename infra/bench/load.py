"""Load and soak on the local stack (make bench): what the outside attack run measured, again.

- Load: LOAD_CLIENTS (200) clients, each its own account, for LOAD_SECONDS (30): submit a job,
  poll it to its end, list jobs and read the balance, again and again, with a 5 s client timeout
  (a client that gives up hangs up). Then every job the server admitted must end: a job admitted
  whose message was lost would stay IN_QUEUE (a phantom admission, its slot held). Run against the
  project's emulator and against plain moto (its TransactWriteItems copying every table per action,
  MOTO_PLAIN=1), the peer.
- Soak: SOAK_CLIENTS (16) clients of mixed traffic for SOAK_SECONDS (3600): new accounts all the
  time (the table grows), jobs submitted, polled, canceled, listed, balances and ledgers read.
  Every SOAK_WINDOW (300 s) a row: requests, errors, p50 / p99, the emulator's and the gateway's
  memory, the table's items. Flat latency and bounded memory are the claim.
"""

import http.client
import json
import os
import random
import statistics
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import jobs

CLIENT_TIMEOUT = 5.0
# How long the jobs admitted in a load run may take to end afterwards.
SETTLE_SECONDS = 90


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def emulator_pid(stack):
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(stack.process.pid)],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if "moto_server.py" in args:
            return int(pid)
    return None


class Client:
    """One keep-alive connection; every request timed and counted."""

    def __init__(self, base, record):
        url = urllib.parse.urlparse(base)
        self.host, self.port = url.hostname, url.port
        self.connection = None
        self.record = record
        self.token = None

    def call(self, method, path, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json"} if data is not None else {}
        if self.token:
            all_headers["authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        started = time.perf_counter()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=CLIENT_TIMEOUT)
            self.connection.request(method, path, body=data, headers=all_headers)
            response = self.connection.getresponse()
            raw = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            # A timeout hangs up, as the attack run's clients did.
            if self.connection is not None:
                self.connection.close()
            self.connection = None
            self.record(time.perf_counter() - started, None, type(error).__name__)
            return None, None
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        failure = None
        if status >= 500:
            code = body.get("code") if isinstance(body, dict) else None
            failure = f"{method} {route_of(path)} {status} {code or '-'}"
        self.record(time.perf_counter() - started, status, failure)
        return status, body

    def register(self, name):
        status, body = self.call("POST", "/v1/auth/register",
                                 {"email": f"{name}@example.com", "username": name, "password": "correct horse"})
        if status == 201:
            self.token = body["access_token"]
            return body["user"]["id"]
        return None


def route_of(path):
    """The path with its ids and query left out, to count failures by route."""
    parts = path.split("?", 1)[0].split("/")
    return "/".join("{id}" if len(part) >= 16 else part for part in parts)


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples = []  # (at, seconds, status, error: the exception's name, or the 5xx's route and code)

    def __call__(self, seconds, status, error):
        with self.lock:
            self.samples.append((time.perf_counter(), seconds, status, error))

    def take(self):
        with self.lock:
            samples, self.samples = self.samples, []
        return samples


def pct(values, q):
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(samples):
    latencies = [s[1] * 1000 for s in samples]
    server_errors = sum(1 for s in samples if s[2] is not None and s[2] >= 500)
    hung_up = sum(1 for s in samples if s[2] is None)
    failures = {}
    for s in samples:
        if s[2] is not None and s[2] >= 500:
            failures[s[3]] = failures.get(s[3], 0) + 1
    return {
        "requests": len(samples),
        "5xx": server_errors,
        "500": sum(1 for s in samples if s[2] == 500),
        "failures": failures,
        "timeouts": hung_up,
        "p50": statistics.median(latencies) if latencies else 0.0,
        "p99": pct(latencies, 0.99),
    }


def log_path(name):
    folder = jobs.ROOT / ".local/bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.log"


def logged_problems(path):
    """The stack's warnings and errors (its JSON log lines), counted by message and cause."""
    counts = {}
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return counts
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("WARN", "ERROR"):
            continue
        fields = entry.get("fields", entry)
        text = f"{entry['level']} {fields.get('message', '')}"
        if "error" in fields:
            text += f": {str(fields['error'])[:300]}"
        counts[text] = counts.get(text, 0) + 1
    return counts


def print_problems(label, figures):
    for failure, n in sorted(figures["failures"].items(), key=lambda kv: -kv[1]):
        print(f"  {label}, 5xx: {failure} x{n}")
    for text, n in sorted(figures.get("logged", {}).items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {label}, logged: {text} x{n}")


def terminal(job):
    return job and job.get("status") in ("COMPLETED", "FAILED", "CANCELED")


def job_loop(client, deadline, answered, sleep_ms):
    """Jobs, one after another, until `deadline` (a job's polling may run 10 s past it)."""
    while time.perf_counter() < deadline:
        status, body = client.call("POST", "/v1/jobs", {"kind": "sleep", "input": {"ms": sleep_ms}})
        if status == 202:
            answered.append(body["id"])
            while time.perf_counter() < deadline + 10:
                status, job = client.call("GET", f"/v1/jobs/{body['id']}")
                if status == 200 and terminal(job):
                    break
                time.sleep(0.1)
        elif status is None or status >= 500:
            time.sleep(0.2)
        client.call("GET", "/v1/jobs?limit=10")
        client.call("GET", "/v1/credits")


def dynamodb_client(stack):
    import boto3

    return boto3.client("dynamodb", endpoint_url=stack.emulator, region_name="us-east-1",
                        aws_access_key_id="local", aws_secret_access_key="local")


def job_statuses(dynamodb):
    """How many jobs the server holds, by status, and the keys of those not ended (one scan of
    the emulator's tables, which holds its lock for the whole table: done once)."""
    counts, waiting = {}, []
    for name in dynamodb.list_tables()["TableNames"]:
        for page in dynamodb.get_paginator("scan").paginate(
                TableName=name, FilterExpression="begins_with(pk, :job)",
                ExpressionAttributeValues={":job": {"S": "JOB#"}}, ProjectionExpression="pk, sk, #s",
                ExpressionAttributeNames={"#s": "status"}):
            for item in page["Items"]:
                status = item.get("status", {}).get("S", "?")
                counts[status] = counts.get(status, 0) + 1
                if status in ("IN_QUEUE", "IN_PROGRESS"):
                    waiting.append((name, {"pk": item["pk"], "sk": item["sk"]}))
    return counts, waiting


def still_waiting(dynamodb, waiting):
    """Those of `waiting` (table, key) not ended yet, read by key, 100 to a request."""
    left = []
    for start in range(0, len(waiting), 100):
        batch = waiting[start:start + 100]
        requests = {}
        for name, key in batch:
            requests.setdefault(name, {"Keys": [], "ProjectionExpression": "pk, sk, #s",
                                       "ExpressionAttributeNames": {"#s": "status"}})["Keys"].append(key)
        while requests:
            out = dynamodb.batch_get_item(RequestItems=requests)
            for name, items in out["Responses"].items():
                for item in items:
                    if item.get("status", {}).get("S") in ("IN_QUEUE", "IN_PROGRESS"):
                        left.append((name, {"pk": item["pk"], "sk": item["sk"]}))
            requests = out.get("UnprocessedKeys") or {}
    return left


def load(plain, clients, seconds):
    env_before = os.environ.get("MOTO_PLAIN")
    if plain:
        os.environ["MOTO_PLAIN"] = "1"
    log = log_path("load-plain" if plain else "load")
    stack = jobs.Stack(log)
    if env_before is None:
        os.environ.pop("MOTO_PLAIN", None)
    try:
        record = Recorder()
        users = []
        for i in range(clients):
            client = Client(stack.base, record)
            if client.register(f"load{i}"):
                users.append(client)
        record.take()
        answered = []
        deadline = time.perf_counter() + seconds
        threads = [threading.Thread(target=job_loop, args=(c, deadline, answered, 50)) for c in users]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        figures = summarize(record.take())
        emulator_mb, gateway_mb = rss_mb(emulator_pid(stack)), rss_mb(stack.process.pid)
        # Every admitted job must end; the outbox's grace (15 s) and the dev reaper's period
        # bound how long a lost message may take.
        # The peer is only timed: its emulator, busy copying tables, would take many minutes to
        # answer the scans (and its memory keeps growing meanwhile).
        # The jobs are found by one scan, then followed by key: a scan every few seconds held the
        # emulator's lock long enough to slow the very jobs it waited for.
        settle_deadline = time.time() + SETTLE_SECONDS
        statuses, waiting = {}, None
        if not plain:
            dynamodb = dynamodb_client(stack)
            statuses, left = job_statuses(dynamodb)
            while left and time.time() < settle_deadline:
                time.sleep(2)
                left = still_waiting(dynamodb, left)
            waiting = len(left)
        figures.update(
            clients=len(users),
            seconds=elapsed,
            admitted=sum(statuses.values()) if not plain else None,
            answered=len(answered),
            stuck=waiting,
            emulator_mb=emulator_mb,
            gateway_mb=gateway_mb,
            logged=logged_problems(log),
        )
        return figures
    finally:
        stack.close()


def soak_client(index, stop, stack_base, record, counters):
    client = Client(stack_base, record)
    generation = 0
    while not stop.is_set():
        # A new account every so often: the table keeps growing, as in the attack run.
        generation += 1
        if not client.register(f"soak{index}x{generation}x{random.randrange(1 << 30)}"):
            time.sleep(0.5)
            continue
        counters["accounts"] += 1
        for _ in range(20):
            if stop.is_set():
                return
            key = {"idempotency-key": f"k{random.randrange(1 << 40)}"} if random.random() < 0.3 else None
            status, body = client.call("POST", "/v1/jobs", {"kind": "sleep", "input": {"ms": random.choice([0, 20, 200])}}, key)
            if status == 202:
                counters["jobs"] += 1
                if random.random() < 0.1:
                    client.call("POST", f"/v1/jobs/{body['id']}/cancel")
                for _ in range(100):
                    status, job = client.call("GET", f"/v1/jobs/{body['id']}")
                    if status != 200 or terminal(job) or stop.is_set():
                        break
                    time.sleep(0.05)
            client.call("GET", "/v1/jobs?limit=20")
            client.call("GET", "/v1/credits")
            if random.random() < 0.2:
                client.call("GET", "/v1/credits/transactions?limit=20")
            if random.random() < 0.1:
                client.call("POST", "/v1/uploads", {"content_type": "image/png", "size": 1000})


def table_items(stack):
    """Items in the dev stack's tables, counted by the emulator (no scan through the lock)."""
    try:
        with urllib.request.urlopen(f"{stack.emulator}/_lambent/items", timeout=30) as response:
            return sum(json.loads(response.read()).values())
    except (OSError, ValueError):
        return -1


def soak(clients, seconds, window):
    log = log_path("soak")
    stack = jobs.Stack(log)
    moto = emulator_pid(stack)
    rows = []
    try:
        record = Recorder()
        counters = {"accounts": 0, "jobs": 0}
        stop = threading.Event()
        threads = [threading.Thread(target=soak_client, args=(i, stop, stack.base, record, counters), daemon=True)
                   for i in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        while time.perf_counter() - started < seconds:
            time.sleep(min(window, max(0.0, seconds - (time.perf_counter() - started))))
            figures = summarize(record.take())
            figures.update(minute=(time.perf_counter() - started) / 60, emulator_mb=rss_mb(moto),
                           gateway_mb=rss_mb(stack.process.pid), items=table_items(stack),
                           accounts=counters["accounts"], jobs=counters["jobs"])
            figures["logged"] = {}
            rows.append(figures)
            print(f"  soak {figures['minute']:.0f} min: {figures['requests']} requests, p50 {figures['p50']:.1f} ms, "
                  f"p99 {figures['p99']:.1f} ms, emulator {figures['emulator_mb']:.0f} MB", flush=True)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    finally:
        stack.close()
    if rows:
        rows[-1]["logged"] = logged_problems(log)
    return rows


def emulator_operations(plain, items=3000, repeat=200):
    """ms per DynamoDB operation on a table of `items` items: one emulator started alone."""
    import tempfile
    from pathlib import Path

    import boto3

    root = Path(__file__).resolve().parents[2]
    port_file = Path(tempfile.mkdtemp()) / "port"
    env = dict(os.environ)
    env.pop("MOTO_PLAIN", None)
    if plain:
        env["MOTO_PLAIN"] = "1"
    server = subprocess.Popen([str(root / ".venv/bin/python"), str(root / "infra/local/moto_server.py"),
                               "--port", "0", "--port-file", str(port_file)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not port_file.exists():
            time.sleep(0.05)
        dynamodb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port_file.read_text()}",
                                region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local")
        string = lambda v: {"S": v}
        dynamodb.create_table(
            TableName="t", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in ("pk", "sk", "g")],
            GlobalSecondaryIndexes=[{"IndexName": "gsi1", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                     "Projection": {"ProjectionType": "ALL"}}])
        for i in range(items):
            dynamodb.put_item(TableName="t", Item={"pk": string(f"USER#{i % 300}"), "sk": string(f"ITEM#{i}"),
                                                   "g": string(f"G{i % 300}"), "v": string("x" * 200)})

        def timed(operation):
            started = time.perf_counter()
            for i in range(repeat):
                operation(i)
            return (time.perf_counter() - started) * 1000 / repeat

        return {
            "transaction": timed(lambda i: dynamodb.transact_write_items(TransactItems=[
                {"Update": {"TableName": "t", "Key": {"pk": string("USER#1"), "sk": string("ITEM#1")},
                            "UpdateExpression": "SET n = if_not_exists(n, :z) + :one",
                            "ExpressionAttributeValues": {":z": {"N": "0"}, ":one": {"N": "1"}}}},
                {"Put": {"TableName": "t", "Item": {"pk": string(f"TX#{i}"), "sk": string("x")}}}])),
            "index query": timed(lambda i: dynamodb.query(
                TableName="t", IndexName="gsi1", KeyConditionExpression="g = :g",
                ExpressionAttributeValues={":g": string(f"G{i % 300}")})),
            "table query": timed(lambda i: dynamodb.query(
                TableName="t", KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": string(f"USER#{i % 300}")})),
            "get item": timed(lambda i: dynamodb.get_item(
                TableName="t", Key={"pk": string(f"USER#{i % 300}"), "sk": string(f"ITEM#{i}")})),
        }
    finally:
        server.kill()
        server.wait()


def print_emulator_operations():
    ours, plain = emulator_operations(False), emulator_operations(True)
    print("DynamoDB operations on the emulator, a table of 3,000 items, ms each (200 of each, one client):")
    print()
    print("| operation | Lambent's emulator | plain moto 5.2.5, the peer | peer / ours |")
    print("|---|---:|---:|---:|")
    for name in ours:
        print(f"| {name} | {ours[name]:.1f} | {plain[name]:.1f} | {plain[name] / ours[name]:.1f}x |")
    print()


def main():
    print_emulator_operations()
    clients = int(os.environ.get("LOAD_CLIENTS", "200"))
    seconds = float(os.environ.get("LOAD_SECONDS", "30"))
    ours = load(False, clients, seconds)
    plain = load(True, clients, seconds)
    print()
    print(f"Load: {clients} clients (an account each) for {seconds:.0f} s: submit a 50 ms job, poll it to its end, "
          f"list jobs, read the balance, again; 5 s client timeout (a client that gives up hangs up).")
    print()
    print("| emulator | requests | req/s | 5xx (of them 500) | client timeouts | p50 ms | p99 ms | admitted | answered 202 | not ended 90 s after | emulator MB | gateway MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in (("Lambent's (item snapshots)", ours), ("plain moto 5.2.5 (table copies), the peer", plain)):
        print(f"| {name} | {f['requests']} | {f['requests'] / f['seconds']:.0f} | {f['5xx']} ({f['500']}) | {f['timeouts']} | "
              f"{f['p50']:.1f} | {f['p99']:.1f} | {'-' if f['admitted'] is None else f['admitted']} | {f['answered']} | {'-' if f['stuck'] is None else f['stuck']} | "
              f"{f['emulator_mb']:.0f} | {f['gateway_mb']:.0f} |")
    print()
    print_problems("Lambent's", ours)
    print()
    soak_clients = int(os.environ.get("SOAK_CLIENTS", "16"))
    soak_seconds = float(os.environ.get("SOAK_SECONDS", "3600"))
    window = float(os.environ.get("SOAK_WINDOW", "300"))
    rows = soak(soak_clients, soak_seconds, window)
    print()
    print(f"Soak: {soak_clients} clients of mixed traffic for {soak_seconds / 60:.0f} min (new accounts all the time, "
          f"jobs submitted, polled and some canceled, 30 % with Idempotency-Key, listings, balances, ledgers, "
          f"upload URLs), a row every {window / 60:.0f} min.")
    print()
    print("| minute | requests | 5xx (of them 500) | timeouts | p50 ms | p99 ms | emulator MB | gateway MB | table items | accounts | jobs |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['minute']:.0f} | {r['requests']} | {r['5xx']} ({r['500']}) | {r['timeouts']} | {r['p50']:.1f} | {r['p99']:.1f} | "
              f"{r['emulator_mb']:.0f} | {r['gateway_mb']:.0f} | {r['items']} | {r['accounts']} | {r['jobs']} |")
    print()
    for r in rows:
        print_problems(f"soak minute {r['minute']:.0f}", r)
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print()
        print(f"Last window vs first: p50 {last['p50'] / max(first['p50'], 1e-9):.2f}x, "
              f"p99 {last['p99'] / max(first['p99'], 1e-9):.2f}x, emulator memory "
              f"{last['emulator_mb'] / max(first['emulator_mb'], 1e-9):.2f}x, table items "
              f"{last['items'] / max(first['items'], 1):.1f}x.")


if __name__ == "__main__":
    main()
