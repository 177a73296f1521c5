"""Fault injection, the request log, and the file-body writer for the local hub.

``FaultInjector`` is the part of ``LocalHub`` a test drives: it is set from the test's thread and
read by the server's event loop, so every access takes a lock. ``send_file`` serves one file
(HEAD, full GET or a single ``Range``) and applies the body faults: a connection cut or stalled
after N bytes, or one flipped byte.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from tests.devkit.hub_repo import HubFile

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class RequestRecord:
    """One request, logged on arrival. ``authorization`` says whether a token came, never which."""

    method: str
    path: str  # percent-decoded, without the query string
    range: str | None
    host: Literal["hub", "cdn"]
    authorization: bool
    status: int | None = None  # None while the response is in flight


@dataclass(frozen=True)
class BodyFaults:
    cut: int | None = None  # bytes of body to send before dropping (or stalling) the connection
    stall: bool = False
    corrupt: bool = False


@dataclass
class _FailRule:
    remaining: int
    status: int
    path_contains: str | None


class FaultInjector:
    """Faults to apply to upcoming requests, and the log of requests served so far."""

    def __init__(self) -> None:
        self._fault_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._fail_rules: list[_FailRule] = []
        self._cuts: dict[str, list[tuple[int, bool]]] = {}
        self._corrupt: set[str] = set()

    def fail_next(self, n: int = 1, *, status: int = 503, path_contains: str | None = None) -> None:
        """Answer the next ``n`` requests (whose path contains ``path_contains``) with ``status``."""
        with self._fault_lock:
            self._fail_rules.append(_FailRule(n, status, path_contains))

    def cut_after(self, filename: str, nbytes: int, *, times: int = 1, stall: bool = False) -> None:
        """Close the connection after ``nbytes`` body bytes on the next ``times`` GETs of ``filename``.

        With ``stall=True`` the connection stays open and silent instead (a hung transfer: the client
        times out, or the test kills it) until the client leaves or the hub stops.
        """
        with self._fault_lock:
            self._cuts.setdefault(filename, []).extend([(nbytes, stall)] * times)

    def corrupt(self, filename: str) -> None:
        """Serve ``filename`` with one byte flipped (same size, wrong sha256) until ``reset_faults``."""
        with self._fault_lock:
            self._corrupt.add(filename)

    def reset_faults(self) -> None:
        with self._fault_lock:
            self._fail_rules.clear()
            self._cuts.clear()
            self._corrupt.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Requests in arrival order (hub and CDN), since the start or the last ``clear_log``."""
        with self._fault_lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        with self._fault_lock:
            return len(self._log)

    def clear_log(self) -> None:
        with self._fault_lock:
            self._log.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._fault_lock:
            self._log.append(record)

    def _take_failure(self, path: str) -> int | None:
        """The status to fail this request with, if a ``fail_next`` rule matches it."""
        with self._fault_lock:
            for rule in self._fail_rules:
                if rule.remaining > 0 and (rule.path_contains is None or rule.path_contains in path):
                    rule.remaining -= 1
                    return rule.status
        return None

    def _take_body_faults(self, filename: str) -> BodyFaults:
        with self._fault_lock:
            pending = self._cuts.get(filename)
            cut, stall = pending.pop(0) if pending else (None, False)
            return BodyFaults(cut, stall, filename in self._corrupt)


async def send_file(
    request: web.Request,
    f: HubFile,
    headers: Mapping[str, str],
    faults: BodyFaults,
    *,
    chunk_size: int,
    serving: Callable[[], bool],
) -> web.StreamResponse:
    """Answer HEAD or GET for ``f`` (200, 206 for a single range, 416), applying ``faults``."""
    base = {
        **headers,
        "Accept-Ranges": "bytes",
        "Content-Type": mimetypes.guess_type(f.path)[0] or "application/octet-stream",
    }
    if request.method == "HEAD":
        return web.Response(status=200, headers={**base, "Content-Length": str(f.size)})
    start, end, status = 0, f.size, 200
    if (requested := parse_range(request.headers.get("Range"), f.size)) is not None:
        if requested == "unsatisfiable":
            return web.Response(status=416, headers={"Content-Range": f"bytes */{f.size}"})
        (start, end), status = requested, 206
        base["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
    response = web.StreamResponse(status=status, headers=base)
    response.content_length = end - start
    await response.prepare(request)
    try:
        if await _write_body(request, response, f, (start, end), faults, chunk_size, serving):
            await response.write_eof()
    except ConnectionResetError:
        log.debug("client went away during %s", request.path)
    return response


async def _write_body(
    request: web.Request,
    response: web.StreamResponse,
    f: HubFile,
    span: tuple[int, int],
    faults: BodyFaults,
    chunk_size: int,
    serving: Callable[[], bool],
) -> bool:
    """Write bytes [start, end) of ``f``; False if the connection was cut on purpose."""
    sent, flip_at = 0, f.size // 2
    for offset in range(span[0], span[1], chunk_size):
        chunk = await asyncio.to_thread(f.read, offset, min(span[1], offset + chunk_size))
        if faults.corrupt and offset <= flip_at < offset + len(chunk):
            i = flip_at - offset
            chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
        if faults.cut is not None and sent + len(chunk) >= faults.cut:
            await response.write(chunk[: faults.cut - sent])
            while faults.stall and serving() and _is_open(request):
                await asyncio.sleep(0.05)
            if request.transport is not None:
                request.transport.close()  # flushes what was written, then drops the connection
            return False
        await response.write(chunk)
        sent += len(chunk)
    return True


def _is_open(request: web.Request) -> bool:
    return request.transport is not None and not request.transport.is_closing()


def parse_range(header: str | None, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """[start, end) for a single ``bytes=`` range; None to ignore the header (serve everything)."""
    match = _RANGE.fullmatch(header.replace(" ", "")) if header else None
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        start, end = max(0, size - int(match[2])), size
    else:
        start, end = int(match[1]), min(size, int(match[2]) + 1) if match[2] else size
    if start >= size or start >= end:
        return "unsatisfiable"
    return start, end
