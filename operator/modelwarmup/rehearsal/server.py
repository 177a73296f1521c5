"""The serving process of a rehearsal: start it, wait until it is ready, send it requests, stop it.

Standard library only: this runs inside the user's serving image (see
:mod:`modelwarmup.rehearsal.launch`). The server gets its own session so that what it starts
(vLLM's engine core and workers) can be found and killed with it; it is stopped the way the
kubelet stops a container, SIGTERM then, after a grace period, SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelwarmup import errors

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class WarmupRequest:
    """One request sent to the ready server: ``METHOD /path [JSON body]``."""

    method: str
    path: str
    body: Any = None

    @classmethod
    def parse(cls, text: str) -> WarmupRequest:
        parts = text.strip().split(maxsplit=2)
        if len(parts) < 2 or parts[0].upper() not in ("GET", "POST") or not parts[1].startswith("/"):
            raise errors.InvalidOptionError(
                f"--request {text!r}: expected 'METHOD /path [JSON body]', METHOD GET or POST"
            )
        body = None
        if len(parts) == 3:
            try:
                body = json.loads(parts[2])
            except json.JSONDecodeError as error:
                raise errors.InvalidOptionError(
                    f"--request {text!r}: the body is not JSON ({error})"
                ) from None
        return cls(parts[0].upper(), parts[1], body)


def check_ready_url(url: str) -> urllib.parse.SplitResult:
    """The ready URL, which must be plain HTTP on this pod's loopback: the rehearsal talks to the
    server it started, never to another host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise errors.InvalidOptionError(f"--ready-url {url!r}: expected http://127.0.0.1:PORT/path")
    if parts.hostname not in LOOPBACK_HOSTS:
        raise errors.InvalidOptionError(
            f"--ready-url {url!r}: {parts.hostname} is another host; the rehearsal only talks to the "
            "server it starts, on 127.0.0.1"
        )
    return parts


def find_command(command: Sequence[str], env: Mapping[str, str]) -> None:
    """Fail before anything starts when the server's executable does not exist."""
    if not command:
        raise errors.InvalidOptionError("no server command: give it after '--'")
    program = command[0]
    found = program if "/" in program else shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None or not os.access(found, os.X_OK) or os.path.isdir(found):
        raise errors.ServerNotFound(f"server command {program!r} not found or not executable in this image")


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:  # refused, reset, timed out, HTTP errors
        return False


class ServerProcess:
    """One run of the server, its output in ``log_path``."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            try:
                self.process = subprocess.Popen(
                    self.command,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except (FileNotFoundError, PermissionError) as error:
                raise errors.ServerNotFound(f"server command {self.command[0]!r}: {error.strerror}") from None
        self.started = time.monotonic()

    def log(self) -> str:
        try:
            return errors.redact_credentials(self.log_path.read_text(encoding="utf-8", errors="replace"))
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def _exited(self, while_doing: str) -> errors.ServerExited:
        assert self.process is not None
        return errors.ServerExited(
            f"the server exited with code {self.process.returncode} {while_doing}; "
            f"the last lines of its log:\n{self.log_tail()}"
        )

    def wait_ready(self, url: str, timeout_s: float) -> float:
        """Poll ``url`` until it answers 200; returns the seconds since the start."""
        assert self.process is not None
        deadline = self.started + timeout_s
        while True:
            if self.process.poll() is not None:
                raise self._exited("before it was ready")
            if _answers_200(url):
                return time.monotonic() - self.started
            if time.monotonic() >= deadline:
                self.kill()
                raise errors.ServerNotReady(
                    f"{url} was not ready after {timeout_s:.0f} s (raise --timeout if the server needs "
                    f"longer); the last lines of its log:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def send(self, base_url: str, request: WarmupRequest, timeout_s: float) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON or text). A dead server is an error."""
        assert self.process is not None
        data = None if request.body is None else json.dumps(request.body).encode()
        http = urllib.request.Request(
            base_url + request.path,
            data=data,
            method=request.method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(http, timeout=timeout_s) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError as error:
            if self.process.poll() is not None:
                raise self._exited(f"while serving {request.method} {request.path}") from None
            raise errors.WarmupRequestFailed(f"{request.method} {request.path}: {error}") from None
        text = raw.decode("utf-8", errors="replace")
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def stop(self, grace_s: float) -> float:
        """SIGTERM, wait up to ``grace_s``; returns the seconds it took. A server still running
        then is killed, and that is an error: its caches may be half-written."""
        assert self.process is not None
        begun = time.monotonic()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.kill()
                raise errors.ServerIgnoredSigterm(
                    f"the server was still running {grace_s:.0f} s after SIGTERM and was killed; what it "
                    "was writing may be incomplete, so nothing is published"
                ) from None
        self._kill_group()  # what the server started and left behind
        return time.monotonic() - begun

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self._kill_group()
            self.process.wait()

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
