"""Jobs on the local stack (make bench): submit -> COMPLETED latency, admission throughput, and the
DynamoDB requests one job costs, read from the emulator's own request counts."""

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def call(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Stack:
    def __init__(self, log=None):
        """`log`: a path that receives the stack's log lines (JSON, warnings and errors)."""
        env = dict(os.environ, PORT="0", RUST_LOG="warn", STARTING_CREDITS="1000000",
                   REGISTER_RATE_PER_MINUTE="100000", LOGIN_RATE_PER_MINUTE="100000")
        self.process = subprocess.Popen([str(ROOT / "target/release/lambent-dev")], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sink = open(log, "w") if log else None
        for line in self.process.stdout:
            if sink:
                sink.write(line)
            found = re.search(r"serving on (\S+)\s+\(AWS emulator: ([^;)\s]+)", line)
            if found:
                self.base, self.emulator = found.group(1), found.group(2)
                break

        def drain():
            for line in self.process.stdout:
                if sink:
                    sink.write(line)
                    sink.flush()
            if sink:
                sink.close()

        threading.Thread(target=drain, daemon=True).start()

    def user(self, name):
        status, body = call("POST", f"{self.base}/v1/auth/register",
                            {"email": f"{name}@example.com", "username": name, "password": "correct horse"})
        assert status == 201, body
        return body["access_token"]

    def stats(self):
        with urllib.request.urlopen(f"{self.emulator}/_lambent/stats") as response:
            return json.loads(response.read())

    def close(self):
        self.process.kill()
        self.process.wait()


def submit(stack, token):
    return call("POST", f"{stack.base}/v1/jobs", {"kind": "sleep", "input": {"ms": 0}}, token)


def wait_done(stack, token, job_id, poll=0.002):
    while True:
        status, job = call("GET", f"{stack.base}/v1/jobs/{job_id}", token=token)
        if job["status"] in ("COMPLETED", "FAILED", "CANCELED"):
            return job
        time.sleep(poll)


def parse_ms(text):
    return time.mktime(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1000 + int(text[20:23])


def latency(stack, jobs=200):
    token = stack.user("latency")
    client, server = [], []
    for _ in range(jobs):
        started = time.perf_counter()
        status, body = submit(stack, token)
        assert status == 202, body
        job = wait_done(stack, token, body["id"])
        client.append((time.perf_counter() - started) * 1000)
        server.append(parse_ms(job["finished_at"]) - parse_ms(job["created_at"]))
    return client, server


def throughput(stack, users=4, slots=4, seconds=10.0):
    tokens = [stack.user(f"loop{i}") for i in range(users)]
    admitted = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop(token):
        while time.perf_counter() < deadline:
            status, body = submit(stack, token)
            if status == 202:
                with lock:
                    admitted[0] += 1
                wait_done(stack, token, body["id"], poll=0.1)

    threads = [threading.Thread(target=loop, args=(t,)) for t in tokens for _ in range(slots)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return admitted[0] / (time.perf_counter() - started)


def quiet(stack, still=2.0, limit=120.0):
    """The emulator's counts once DynamoDB has had no request for `still` seconds: the work before
    (the throughput run's webhook deliveries drain for a while after its last job) is not counted,
    and the job measured has finished without the client reading it."""
    ddb = lambda stats: {k: v for k, v in stats.items() if k.startswith("DynamoDB")}
    last, since, deadline = stack.stats(), time.perf_counter(), time.perf_counter() + limit
    while time.perf_counter() < deadline:
        time.sleep(0.1)
        now = stack.stats()
        if ddb(now) != ddb(last):
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since >= still:
            return now
    sys.exit(f"DynamoDB was still busy after {limit:.0f} s")


def round_trips(stack):
    token = stack.user("trips")
    before = quiet(stack)
    status, body = submit(stack, token)
    after_admission = stack.stats()
    assert status == 202
    # Wait without reading the job, so the client adds no requests to the count.
    after = quiet(stack)
    diff = lambda a, b: {k: b.get(k, 0) - a.get(k, 0) for k in b if b.get(k, 0) != a.get(k, 0)}
    return diff(before, after_admission), diff(after_admission, after)


def p(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    stack = Stack()
    try:
        client, server = latency(stack)
        rate = throughput(stack)
        admission, rest = round_trips(stack)
    finally:
        stack.close()
    ddb = lambda d, op: d.get(f"DynamoDB_20120810.{op}", 0)
    print("Jobs on the local stack (release build of the gateway and worker, moto serializing DynamoDB):")
    print()
    print("| figure | value |")
    print("|---|---:|")
    print(f"| submit -> COMPLETED, 0 ms sleep job, p50 (client, polling every 2 ms) | {statistics.median(client):.1f} ms |")
    print(f"| submit -> COMPLETED, p95 (client) | {p(client, 0.95):.1f} ms |")
    print(f"| created_at -> finished_at, p50 / p95 (server clocks) | {statistics.median(server):.0f} / {p(server, 0.95):.0f} ms |")
    print(f"| admission throughput, 4 users x 4 slots, each slot submitting again when its job ends (status polled every 100 ms) | {rate:.1f} jobs/s |")
    # The worker's read may land while the admission is measured; transactions are only the
    # admission's (first window) and the release's (second window).
    whole = {k: admission.get(k, 0) + rest.get(k, 0) for k in set(admission) | set(rest)}
    ops = {k.split(".")[-1]: v for k, v in whole.items() if k.startswith("DynamoDB") and not k.endswith("Query")}
    print(f"| DynamoDB round trips per admission (target 1) | {ddb(admission, 'TransactWriteItems')} TransactWriteItems |")
    # After the admission: the release, and the in-app notification of the job's end.
    print(f"| DynamoDB transactions after the admission: the release (target 1) and the notification of the job's end | {ddb(rest, 'TransactWriteItems')} TransactWriteItems |")
    print(f"| DynamoDB requests per job, all told | {sum(ops.values())} ({', '.join(f'{k} {v}' for k, v in sorted(ops.items()))}) |")

if __name__ == "__main__":
    main()
