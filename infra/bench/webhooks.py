"""Webhooks (make bench): finalize latency of a provider's webhook, Standard Webhooks signing and
verifying beside the standard's own Python library, fal's Ed25519 check beside Python's
`cryptography`, and delivery throughput through the local stack's queue.

The Lambent figures come from `lambent-webhook-bench` (release build), the peers from this
process, on the same bodies, in the same run."""

import base64
import datetime
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parents[2]
SIGNATURES = int(os.environ.get("BENCH_SIGNATURES", "20000"))


def rate(iterations, work):
    started = time.perf_counter()
    for _ in range(iterations):
        work()
    return iterations / (time.perf_counter() - started)


def python_peers(body, fal_body):
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    hook = Webhook(secret)
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    sign = rate(SIGNATURES, lambda: hook.sign("evt_1", now, body))
    signature = hook.sign("evt_1", now, body)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": signature}
    verify = rate(SIGNATURES, lambda: hook.verify(body, headers))
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    timestamp = str(int(time.time()))

    def message():
        return f"req-1\nlocal-fal-user\n{timestamp}\n{hashlib.sha256(fal_body.encode()).hexdigest()}".encode()

    fal_signature = key.sign(message())
    fal = rate(SIGNATURES // 4, lambda: public.verify(fal_signature, message()))
    return sign, verify, fal


def main():
    binary = ROOT / "target" / "release" / "lambent-webhook-bench"
    out = subprocess.run([str(binary), "--signatures", str(SIGNATURES)], check=True,
                         capture_output=True, text=True, env=dict(os.environ, RUST_LOG="error")).stdout
    ours = json.loads(out.strip().splitlines()[-1])
    body = json.dumps({"type": "job.completed", "timestamp": "2026-11-22T14:00:00Z",
                       "data": {"id": "01a203ce-62ed-723c-859c-1d2f4e23f43d", "status": "COMPLETED"}},
                      separators=(",", ":"))
    fal_body = "x" * ours["fal_body_bytes"]
    sign, verify, fal = python_peers(body, fal_body)
    f = ours["finalize_ms"]
    print(f"Webhooks on the local stack (moto serializing DynamoDB), {f['jobs']} fal jobs.")
    print()
    print("| finalize (fal webhook received → COMPLETED: verify, copy output to S3, release) | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|")
    print(f"| Lambent `receive-fal-webhook` | {f['p50']:.1f} | {f['p95']:.1f} | {f['max']:.1f} |")
    print()
    print(f"| per second, {ours['body_bytes']} B event body | Lambent (Rust) | Python reference | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| Standard Webhooks sign (`standardwebhooks` crate vs PyPI `standardwebhooks`) | {ours['sign_per_s']:,.0f} | {sign:,.0f} | {ours['sign_per_s'] / sign:.1f}x |")
    print(f"| Standard Webhooks verify | {ours['verify_per_s']:,.0f} | {verify:,.0f} | {ours['verify_per_s'] / verify:.1f}x |")
    print(f"| fal webhook check, {ours['fal_body_bytes']} B (SHA-256 + Ed25519; aws-lc vs `cryptography`) | {ours['fal_verify_per_s']:,.0f} | {fal:,.0f} | {ours['fal_verify_per_s'] / fal:.1f}x |")
    print()
    d = ours["deliveries"]
    print(f"Delivery, {d['events']} events queued → fanned out → signed → POSTed → verified by a local "
          f"receiver: {d['per_s']:.0f} events/s end to end ({d['delivered_s']:.2f} s; queueing took {d['queued_s']:.2f} s). "
          "Bound by the emulator's SQS (one Python process), as the jobs figures are.")
    print()


if __name__ == "__main__":
    main()
