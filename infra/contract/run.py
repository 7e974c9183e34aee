"""The API contract check (`make contract`, part of `make test`).

Starts the dev stack (`lambent-dev`: the gateway, the emulator and the fake providers) on a free
port, signs up one user for a bearer token, then runs schemathesis over every operation of
`/openapi.json` with a fixed seed and a case budget, checking that no answer is a 5xx and that every
status, content type and body is the one the document describes. Exits with schemathesis's status.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVER = ROOT / "target" / "debug" / "lambent-dev"
CONTRACT_PYTHON = ROOT / ".venv" / "contract" / "bin" / "python"
SCHEMATHESIS = [str(CONTRACT_PYTHON), str(ROOT / "infra" / "contract" / "st.py")]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
SEED = os.environ.get("CONTRACT_SEED", "20261201")
MAX_EXAMPLES = os.environ.get("CONTRACT_MAX_EXAMPLES", "100")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:
        return json.load(response)


def wait_for(url, seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return request(url)
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise SystemExit(f"the dev stack did not answer {url} within {seconds} s")
            time.sleep(0.2)


def main():
    for path, make in ((SERVER, "cargo build -p lambent-local --bin lambent-dev"), (CONTRACT_PYTHON, "make contract")):
        if not path.exists():
            sys.exit(f"{path} is missing: {make} builds it")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(ROOT / "target" / "contract-server.log", "w")
    env = dict(os.environ, PORT=str(port), RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    server = subprocess.Popen([str(SERVER)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_for(f"{base}/health", 120)
        token = request(f"{base}/v1/auth/register", {
            "email": "contract@example.com", "username": "contract", "password": "contract-check-1",
        })["access_token"]
        started = time.monotonic()
        run = subprocess.run([
            *SCHEMATHESIS, "run", f"{base}/openapi.json",
            "--checks", CHECKS,
            "--seed", SEED,
            "--max-examples", MAX_EXAMPLES,
            "--header", f"Authorization: Bearer {token}",
            "--workers", "2",
            "--phases", "examples,coverage,fuzzing",
            "--no-shrink",
            "--suppress-health-check", "all",
        ], env=dict(os.environ, SCHEMATHESIS_TELEMETRY="false"))
        print(f"contract check: {time.monotonic() - started:.0f} s, seed {SEED}, "
              f"{MAX_EXAMPLES} cases per operation at most (server log: target/contract-server.log)")
        return run.returncode
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
