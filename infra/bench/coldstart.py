"""Cold starts of the routes that matter (#17), exec to first response, against the emulator.

Lambent: the function executable (the `bootstrap` cargo lambda builds) started with one route's
`_HANDLER` and the stack's environment against this bench's Lambda Runtime API, every AWS call
answered by the emulator (`lambent-stack` bootstraps template.yaml's resources in it):
- login: the signing keys from Secrets Manager, the rate limits, the account, argon2id, a session
  and a token;
- create-job: the admission transaction and the queue message;
- get-job: the job's item;
- run-job: an SQS event naming an upscale job: the model loaded (the template's OpenVINO provider),
  a 64 × 48 photo read from S3, upscaled ×2, stored, the job released.
The peer: FastAPI + uvicorn (fastapi_routes.py) doing the same work with boto3 against the same
emulator; its clock stops at its first answer to that route.

Both name an SDK app id (AWS_SDK_UA_APP_ID), by which the emulator keeps the time it spent serving
their calls (GET /_lambent/busy): each run's share at the emulator is printed beside its total, and
the total less that share, the time the route's own process took, which is what a faster or slower
emulator (or DynamoDB itself) does not change.
"""

import base64
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from run import ROOT, free_port, lambent_cold_start, summary

APP_ID = "lambent-cold-bench"
RUNS = int(os.environ.get("BENCH_COLD_RUNS", os.environ.get("BENCH_RUNS", "15")))
PASSWORD = "correct horse battery"
PHOTO = ROOT / "tests" / "fixtures" / "images" / "scene.png"


def call(base, method, path, body=None, token=None, raw=None, content_type="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    if data is not None:
        request.add_header("content-type", content_type)
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read()
        return json.loads(text) if text else None


def event(name, body=None, claims=None, path_params=None, raw_path=None):
    e = json.loads((ROOT / "events" / f"{name}.json").read_text())
    if body is not None:
        e["body"] = json.dumps(body)
    if claims is not None:
        e["requestContext"]["authorizer"]["jwt"]["claims"].update(claims)
    if path_params is not None:
        e["pathParameters"] = path_params
    if raw_path is not None:
        e["rawPath"] = raw_path
        e["requestContext"]["http"]["path"] = raw_path
    return json.dumps(e).encode()


def api_status(expected):
    def check(response):
        if response.get("statusCode") != expected:
            raise RuntimeError(f"expected {expected}: {json.dumps(response)[:400]}")

    return check


def batch_ok(response):
    if response.get("batchItemFailures"):
        raise RuntimeError(f"the job failed: {response}")


def emulator_seconds(stack):
    """Seconds the emulator has spent serving the calls of clients named APP_ID."""
    with urllib.request.urlopen(f"{stack.endpoint}/_lambent/busy", timeout=10) as response:
        return json.loads(response.read()).get(APP_ID, {}).get("ms", 0.0) / 1000


class Timed:
    """Each route's cold starts and, run by run, the emulator's share of each."""

    def __init__(self, stack, routes):
        self.stack = stack
        self.total = {route: [] for route in routes}
        self.emulator = {route: [] for route in routes}

    def add(self, route, cold_start):
        before = emulator_seconds(self.stack)
        total = cold_start()
        self.total[route].append(total)
        self.emulator[route].append(emulator_seconds(self.stack) - before)

    def own(self, route):
        return [t - e for t, e in zip(self.total[route], self.emulator[route])]

    def cells(self, route):
        """The table's cells for one side: median, p90, median at the emulator, median own, in ms."""
        total = summary(self.total[route])
        return [f"{total['median']:.1f}", f"{total['p90']:.1f}",
                f"{summary(self.emulator[route])['median']:.1f}", f"{summary(self.own(route))['median']:.1f}"]


class Stack:
    """lambent-stack: the emulator, the stack and its gateway, until closed."""

    def __init__(self, binary):
        self.out = Path(tempfile.mkdtemp()) / "stack.json"
        self.process = subprocess.Popen(
            [str(binary), "--out", str(self.out)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 180
        while not (self.out.exists() and self.out.stat().st_size):
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError("lambent-stack did not start")
            time.sleep(0.1)
        description = json.loads(self.out.read_text())
        self.endpoint = description["endpoint"]
        self.base = description["base_url"]
        self.env = description["env"]

    def close(self):
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def aws_env(stack):
    return {
        "AWS_ENDPOINT_URL": stack.endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def upload_photo(stack, token):
    data = PHOTO.read_bytes()
    target = call(stack.base, "POST", "/v1/uploads", {"content_type": "image/png", "size": len(data)}, token)
    request = urllib.request.Request(target["url"], data=data, method="PUT")
    for name, value in target["headers"].items():
        if name.lower() not in ("host", "content-length"):
            request.add_header(name, value)
    urllib.request.urlopen(request, timeout=60).read()
    return target["key"]


def lambent_rows(binary, stack):
    env = dict(stack.env, **aws_env(stack), RUST_LOG="warn", AWS_SDK_UA_APP_ID=APP_ID)
    email = f"cold_{uuid.uuid4().hex[:8]}@example.com"
    registered = call(stack.base, "POST", "/v1/auth/register", {"email": email, "username": email.split("@")[0], "password": PASSWORD})
    token, user = registered["access_token"], registered["user"]
    claims = {"sub": user["id"], "username": user["username"]}
    job = call(stack.base, "POST", "/v1/jobs", {"kind": "sleep", "input": {"ms": 1}}, token)["id"]
    times = Timed(stack, ("login", "create-job", "get-job", "run-job", "run-job, ORT CPU provider"))
    for _ in range(RUNS):
        times.add(
            "login", lambda: lambent_cold_start(binary, "login", event("login", {"email": email, "password": PASSWORD}), env, api_status(200))
        )
        created = {}

        def accepted(response):
            api_status(202)(response)
            body = response["body"]
            if response.get("isBase64Encoded"):
                body = base64.b64decode(body)
            created["id"] = json.loads(body)["id"]

        times.add(
            "create-job",
            lambda: lambent_cold_start(binary, "create-job", event("create-job", {"kind": "sleep", "input": {"ms": 1}}, claims), env, accepted),
        )
        # Its cap slot back before the next run.
        call(stack.base, "POST", f"/v1/jobs/{created['id']}/cancel", token=token)
        times.add(
            "get-job",
            lambda: lambent_cold_start(
                binary, "get-job", event("get-job", claims=claims, path_params={"id": job}, raw_path=f"/v1/jobs/{job}"), env, api_status(200)
            ),
        )
        key = upload_photo(stack, token)
        photo = call(stack.base, "POST", "/v1/photos/upscale", {"upload_key": key, "model": "realesr-animevideov3-x2"}, token)["id"]
        sqs = json.loads((ROOT / "events" / "run-job.json").read_text())
        sqs["Records"][0]["body"] = json.dumps({"job_id": photo})
        times.add("run-job", lambda: lambent_cold_start(binary, "run-job", json.dumps(sqs).encode(), env, batch_ok))
        status = call(stack.base, "GET", f"/v1/photos/{photo}", token=token)["status"]
        if status != "COMPLETED":
            raise RuntimeError(f"the upscale ended {status}")
        # The same with ONNX Runtime's own CPU provider (UPSCALE_PROVIDER=cpu): no OpenVINO compile.
        key = upload_photo(stack, token)
        photo = call(stack.base, "POST", "/v1/photos/upscale", {"upload_key": key, "model": "realesr-animevideov3-x2"}, token)["id"]
        sqs["Records"][0]["body"] = json.dumps({"job_id": photo})
        cpu_env = dict(env, UPSCALE_PROVIDER="cpu", ORT_DYLIB_PATH=str(onnxruntime_library()))
        times.add("run-job, ORT CPU provider", lambda: lambent_cold_start(binary, "run-job", json.dumps(sqs).encode(), cpu_env, batch_ok))
    return times


def onnxruntime_library():
    """The plain onnxruntime wheel's library (the exact CPU build), as the local stack finds it."""
    found = sorted((ROOT / ".venv").glob("lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1*"))
    if not found:
        raise RuntimeError("onnxruntime's library is missing: make models installs it")
    return found[-1]


def peer_setup(stack):
    import boto3
    from argon2 import PasswordHasher
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1")
    table = stack.env["TABLE_NAME"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    secret = session.client("secretsmanager", endpoint_url=stack.endpoint).create_secret(
        Name=f"bench-peer-{uuid.uuid4().hex[:8]}", SecretString=json.dumps({"kid": "peer-1", "private_pem": pem})
    )["ARN"]
    dynamodb = session.client("dynamodb", endpoint_url=stack.endpoint)
    email = "peer@example.com"
    hashed = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash(PASSWORD)
    dynamodb.put_item(
        TableName=table,
        Item={
            "pk": {"S": f"PEER#USER#{email}"},
            "sk": {"S": "PROFILE"},
            "id": {"S": str(uuid.uuid4())},
            "hash": {"S": hashed},
            "active": {"N": "0"},
            "credits": {"N": "100000"},
        },
    )
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "PEER#JOB#run"}, "sk": {"S": "JOB"}, "status": {"S": "IN_QUEUE"}, "kind": {"S": "upscale"}})
    s3 = session.client("s3", endpoint_url=stack.endpoint)
    s3.put_object(Bucket=stack.env["MEDIA_BUCKET"], Key="peer/scene.png", Body=PHOTO.read_bytes(), ContentType="image/png")

    def reset():
        dynamodb.update_item(
            TableName=table,
            Key={"pk": {"S": f"PEER#USER#{email}"}, "sk": {"S": "PROFILE"}},
            UpdateExpression="SET active = :zero",
            ExpressionAttributeValues={":zero": {"N": "0"}},
        )

    env = dict(os.environ)
    env.update(aws_env(stack), AWS_SDK_UA_APP_ID=APP_ID)
    env.update(
        {
            "PEER_TABLE": table,
            "PEER_SECRET_ID": secret,
            "PEER_QUEUE_URL": stack.env["JOBS_QUEUE_URL"],
            "PEER_BUCKET": stack.env["MEDIA_BUCKET"],
            "PEER_MODEL": str(Path(stack.env["MODELS_DIR"]) / "realesr-animevideov3-x2.onnx"),
        }
    )
    return email, env, reset


def peer_cold_start(python, env, method, path, body):
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [python, "-m", "uvicorn", "fastapi_routes:app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=Path(__file__).parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = started + 60
        payload = json.dumps(body).encode() if body is not None else None
        while time.perf_counter() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {"content-type": "application/json"} if payload else {}
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                text = response.read()
                if response.status in (200, 202):
                    return time.perf_counter() - started
                raise RuntimeError(f"the peer answered {response.status}: {text[:300]!r}")
            except (ConnectionRefusedError, http.client.RemoteDisconnected):
                time.sleep(0.001)
        raise RuntimeError("uvicorn did not answer")
    finally:
        process.kill()
        process.wait()


def peer_rows(python, stack):
    email, env, reset = peer_setup(stack)
    job = "run"
    times = Timed(stack, ("login", "create-job", "get-job", "run-job"))
    for _ in range(RUNS):
        times.add("login", lambda: peer_cold_start(python, env, "POST", "/login", {"email": email, "password": PASSWORD}))
        times.add("create-job", lambda: peer_cold_start(python, env, "POST", "/jobs", {"email": email, "kind": "sleep", "input": {"ms": 1}}))
        reset()
        times.add("get-job", lambda: peer_cold_start(python, env, "GET", f"/jobs/{job}", None))
        times.add("run-job", lambda: peer_cold_start(python, env, "POST", "/run", {"key": "peer/scene.png"}))
    return times


def main(binary=None):
    binary = Path(binary or ROOT / "target" / "lambda" / "lambent" / "bootstrap")
    stack_binary = Path(os.environ.get("LAMBENT_STACK", ROOT / "target" / "release" / "lambent-stack"))
    python = str(ROOT / ".venv" / "bin" / "python")
    stack = Stack(stack_binary)
    try:
        ours = lambent_rows(binary, stack)
        peers = peer_rows(python, stack)
    finally:
        stack.close()
    print(f"Cold start of real routes, exec to first response, every AWS call answered by the emulator; median of {RUNS} runs each.")
    print("'at the emulator': the time the emulator spent serving that run's AWS calls; 'own': the total less it, run by run.")
    print()
    print(
        "| route | Lambent median ms | p90 ms | at the emulator | own | "
        "FastAPI + uvicorn median ms | p90 ms | at the emulator | own | FastAPI / Lambent |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for route in ("login", "create-job", "get-job", "run-job", "run-job, ORT CPU provider"):
        peer = "run-job" if route.startswith("run-job") else route
        a, b = summary(ours.total[route]), summary(peers.total[peer])
        cells = ours.cells(route) + peers.cells(peer)
        print(f"| {route} | {' | '.join(cells)} | {b['median'] / a['median']:.1f}x |")
    print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
