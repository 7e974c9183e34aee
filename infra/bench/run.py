"""make bench: figures side by side with their peers, in one run, on this machine.

Cold start: from exec to the first response.
- Lambent: a function binary (the `bootstrap` that cargo lambda builds for AWS) started against a
  Lambda Runtime API endpoint served here; the clock stops when the function posts its response to
  the first invocation (GET /health).
- FastAPI + uvicorn (PetCam's stack): the clock stops when the first GET /health answers 200.
"""

import datetime
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = int(os.environ.get("BENCH_RUNS", "25"))
EVENT = (ROOT / "events" / "health.json").read_bytes()


class RuntimeApi(ThreadingHTTPServer):
    """Just enough of the Lambda Runtime API for one invocation per process."""

    daemon_threads = True

    def __init__(self, event=EVENT, function="health"):
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.event = event
        self.function = function
        self.responded = threading.Event()
        self.served = False
        self.response = None
        self.finished_at = None


class RuntimeHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        if self.server.served:
            # One invocation per cold start: park the next poll until the process is killed.
            self.server.responded.wait()
            time.sleep(30)
            return
        self.server.served = True
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-1")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", f"arn:aws:lambda:us-east-1:123456789012:function:{self.server.function}")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.event)))
        self.end_headers()
        self.wfile.write(self.server.event)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        if "/response" in self.path or "/error" in self.path:
            self.server.finished_at = time.perf_counter()
            self.server.response = (self.path, body)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if self.server.response is not None:
            self.server.responded.set()


def lambent_cold_start(binary, function="health", event=EVENT, extra_env=None, check=None):
    """Seconds from exec to the function's response to its first invocation; `check(body)` raises
    unless the response is the one expected (default: a 200 API response)."""
    api = RuntimeApi(event, function)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.server_address[1]}",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "_HANDLER": function,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
        "TABLE_NAME": "bench",
        "SIGNING_KEY_SECRET_ID": "bench",
        "JWT_AUDIENCE": "lambent",
        "RUST_LOG": "warn",
    }
    env.update(extra_env or {})
    started = time.perf_counter()
    process = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not api.responded.wait(30):
            raise RuntimeError("the function did not respond")
        path, body = api.response
        if "/response" not in path:
            raise RuntimeError(f"the function failed: {path} {body[:300]!r}")
        if check is None:
            if json.loads(body).get("statusCode") != 200:
                raise RuntimeError(f"the function failed: {path} {body[:300]!r}")
        else:
            check(json.loads(body))
        return api.finished_at - started
    finally:
        process.kill()
        process.wait()
        api.shutdown()
        api.server_close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fastapi_cold_start(python):
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [python, "-m", "uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=Path(__file__).parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = started + 30
        while time.perf_counter() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.001)
        raise RuntimeError("uvicorn did not answer")
    finally:
        process.kill()
        process.wait()


def summary(samples):
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered) * 1000,
        "p90": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "min": ordered[0] * 1000,
    }


def main():
    binary = ROOT / "target" / "lambda" / "lambent" / "bootstrap"
    if not binary.exists():
        sys.exit(f"{binary} is missing: make bench builds it with `make lambda`")
    python = str(ROOT / ".venv" / "bin" / "python")
    # Interleave the peers so the machine's noise falls on both alike.
    lambent, fastapi = [], []
    for _ in range(RUNS):
        lambent.append(lambent_cold_start(binary))
        fastapi.append(fastapi_cold_start(python))
    rows = [("Lambent `health` (Rust, cargo lambda release)", summary(lambent)),
            ("FastAPI + uvicorn (PetCam's stack)", summary(fastapi))]
    base = rows[0][1]["median"]
    from cpu import Cpu

    print(f"{datetime.date.today().isoformat()} on {Cpu().line()}; {platform.system()} {platform.release()}")
    print()
    print(f"Cold start, exec to first response; median of {RUNS} runs each, interleaved.")
    print()
    print("| cold start | median ms | p90 ms | min ms | vs Lambent |")
    print("|---|---:|---:|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s['median']:.1f} | {s['p90']:.1f} | {s['min']:.1f} | {s['median'] / base:.1f}x |")
    print()
    import coldstart

    coldstart.main(binary)
    import jobs
    import load
    import photos
    import search
    import social
    import video
    import webhooks

    jobs.main()
    webhooks.main()
    search.main()
    social.main()
    photos.main()
    video.main()
    # Last: the soak runs an hour (SOAK_SECONDS to shorten it).
    load.main()


if __name__ == "__main__":
    main()
