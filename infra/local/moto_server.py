"""moto server with DynamoDB requests serialized.

Plain moto is not atomic under concurrency: conditional writes racing on one item can both pass, which real
DynamoDB never allows. Holding one lock per DynamoDB request makes every conditional write and transaction
atomic, as in AWS. S3 and SQS stay unlocked so SQS long polls do not stall everything else.

Usage: python moto_server.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
With --port 0 a free port is chosen and written to --port-file once the server listens.
"""

import argparse
import json
import os
import threading
import time

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server


class SerializedDynamoDB:
    """Also counts requests by operation, served at GET /_lambent/stats (for make bench)."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.counts = {}
        self.counts_lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") == "/_lambent/stats":
            with self.counts_lock:
                body = json.dumps(self.counts).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            with self.counts_lock:
                self.counts[target] = self.counts.get(target, 0) + 1
        if target.startswith("DynamoDB"):
            with self.lock:
                # Consume the whole response inside the lock: moto may build it lazily.
                body = b"".join(self.app(environ, start_response))
            return [body]
        return self.app(environ, start_response)


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs):
        pass


def exit_with_parent():
    """Stop when the process that started us is gone (tests keep the emulator in a static)."""
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    parser.add_argument("--exit-with-parent", action="store_true")
    args = parser.parse_args()
    if args.exit_with_parent:
        threading.Thread(target=exit_with_parent, daemon=True).start()

    app = SerializedDynamoDB(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=QuietHandler)
    port = server.socket.getsockname()[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    print(f"moto listening on http://{args.host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
