"""A small HTTP server that behaves the ways a real server can fail, for the rehearsal's own tests.

It stands in for a serving engine only where one cannot be made to misbehave on purpose: exiting
before it is ready, never becoming ready, ignoring SIGTERM, writing no cache, compiling again at
every start. The rehearsal's success path is tested with vLLM itself (test_vllm_rehearsal.py).

``--cache-var VAR``: on start, writes ``compiled/kernel.bin`` under ``$VAR`` unless it is there
(a cache hit), or a new file at every start with ``--always-compile``. Each start appends a line to
``$STAND_IN_STARTS`` when that is set, so a test can count starts.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cache-var", default=None)
    parser.add_argument("--always-compile", action="store_true")
    parser.add_argument("--exit-before-ready", type=int, default=None)
    parser.add_argument("--never-ready", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--reject-completions", action="store_true")
    args = parser.parse_args()
    if starts := os.environ.get("STAND_IN_STARTS"):
        with open(starts, "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()}\n")
    print("stand-in server starting", flush=True)
    if args.exit_before_ready is not None:
        print("stand-in server: cannot load the model (on purpose)", flush=True)
        return args.exit_before_ready
    if args.cache_var:
        cache = Path(os.environ[args.cache_var]) / "compiled"
        cache.mkdir(parents=True, exist_ok=True)
        name = f"kernel-{uuid.uuid4().hex[:8]}.bin" if args.always_compile else "kernel.bin"
        if not (cache / name).exists():
            (cache / name).write_bytes(os.urandom(1024))
            print(f"compiled {name}", flush=True)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._answer(503 if args.never_ready else 200, {})
            elif self.path == "/v1/models":
                self._answer(200, {"data": [{"id": "stand-in", "max_model_len": 64}]})
            else:
                self._answer(404, {})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if args.reject_completions:
                self._answer(500, {"error": "the engine died (on purpose)"})
            else:
                self._answer(200, {"choices": [{"text": " Paris"}]})

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    time.sleep(0.2)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
