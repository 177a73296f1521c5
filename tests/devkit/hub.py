"""A Hugging Face Hub look-alike on 127.0.0.1, for tests and the offline demo.

Why: the real hub is unreachable from CI and from the demo cluster, yet the operator's worker
talks to it through the real ``huggingface_hub`` client (``snapshot_download``, ``hf_hub_download``,
``HfApi.model_info`` ...). ``LocalHub`` serves local directories as model repos, answering the
requests that client makes with the same status codes and headers the real hub sends, and lets a
test inject faults (5xx, connections cut mid-body, corrupted bytes) and read back what the client
asked for. The repo/commit model lives in ``tests.devkit.hub_repo``, the faults, request log
and byte-range serving in ``tests.devkit.hub_faults``.

Endpoints (``{rev}`` is a branch, tag or commit sha, percent-encoded as the client sends it):

* ``GET /api/models/{repo}``, ``/api/models/{repo}/revision/{rev}`` (``?blobs=true`` adds sizes and
  LFS sha256, as ``model_info(files_metadata=True)`` asks), ``/api/models/{repo}/tree/{rev}[/{path}]``
  (``list_repo_tree``, ``list_repo_files``, ``snapshot_download``), ``/api/models/{repo}/refs``.
* ``HEAD|GET /{repo}/resolve/{rev}/{file}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1, or sha256
  for LFS files), ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Accept-Ranges``; ``Range``
  requests get 206 + ``Content-Range`` (416 when unsatisfiable). Like the real hub, LFS files are
  answered with a 302 to a "CDN" (a second port, so a different origin: the client does not follow
  the HEAD redirect and drops its token on the GET) unless ``lfs_redirect=False``.
* Errors carry ``X-Error-Code``/``X-Error-Message``: ``RepoNotFound`` (401 without a token, 404 with
  one), ``RevisionNotFound`` (404), ``EntryNotFound`` (404, with ``X-Repo-Commit``), ``GatedRepo``
  (401 without a token, 403 with a wrong one). Metadata of gated repos is public, files are not;
  private repos answer ``RepoNotFound`` to everyone without the token. Tokens are never logged.

Pointing clients at it: ``hf_hub_download``, ``snapshot_download`` and ``HfApi`` take
``endpoint=hub.endpoint``. Everything that does not (``transformers``' ``from_pretrained``, the
module-level ``huggingface_hub`` helpers that build their own ``HfApi()``) reads
``huggingface_hub.constants.ENDPOINT``, which is read from ``HF_ENDPOINT`` once, at import time, as are
``HF_HUB_DISABLE_XET`` and ``HF_HUB_DISABLE_TELEMETRY``: set those in the environment of the process
(or subprocess) before it imports ``huggingface_hub``. This server never sends Xet headers, so
downloads stay plain HTTP either way.

Use ``with LocalHub() as hub:`` from sync code (server on a background thread with its own event
loop), ``async with LocalHub() as hub:`` from async code (server on the running loop), or run
``python -m tests.devkit.hub --repo org/name=DIR [--tiny org/tiny] [--port N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import socket
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import quote, unquote

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from tests.background import BackgroundLoop
from tests.devkit import hub_repo
from tests.devkit.hub_faults import BodyFaults, FaultInjector, RequestRecord, send_file
from tests.devkit.hub_repo import DEFAULT_LFS_THRESHOLD, Access, Commit, HubFile, HubRepo

__all__ = ["LocalHub", "RequestRecord", "main"]

log = logging.getLogger(__name__)

_RESOLVE = re.compile(r"/([^/]+/[^/]+|[^/]+)/resolve/([^/]+)/(.+)")
_CDN = re.compile(r"/(.+)/([0-9a-f]{40})/(.+)")
_API_KEYWORDS = frozenset({"revision", "tree", "refs"})


class LocalHub(FaultInjector):
    """Serves model repos over HTTP on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        lfs_redirect: bool = True,
        lfs_threshold: int = DEFAULT_LFS_THRESHOLD,
        chunk_size: int = 64 * 1024,
    ) -> None:
        super().__init__()
        self.host, self._ports = host, (port, cdn_port)
        self.lfs_redirect, self.lfs_threshold, self.chunk_size = lfs_redirect, lfs_threshold, chunk_size
        self._repos: dict[str, HubRepo] = {}
        self._lock = threading.Lock()
        self._runners: list[web.AppRunner] = []
        self._bound: tuple[int, int] | None = None
        self._background: BackgroundLoop | None = None

    # ---- repos -------------------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        path: Path,
        *,
        branch: str = "main",
        tags: Iterable[str] = (),
        required_token: str | None = None,
        access: Access | None = None,
        message: str = "",
    ) -> str:
        """Add ``path`` as a new commit of ``repo_id`` (created if new) on ``branch``; return its sha.

        ``required_token`` makes the repo ``gated`` unless ``access="private"`` is given.
        """
        with self._lock:
            repo = self._repos.setdefault(repo_id, HubRepo(repo_id))
            if required_token is not None:
                repo.required_token, repo.access = required_token, access or "gated"
            elif access is not None:
                repo.access = access
            if repo.access != "public" and repo.required_token is None:
                raise ValueError(f"{repo.access} repo {repo_id} needs a required_token")
            commit = repo.add_commit(
                path, branch=branch, tags=tags, message=message, lfs_threshold=self.lfs_threshold
            )
        return commit.sha

    def repo(self, repo_id: str) -> HubRepo:
        return self._repos[repo_id]

    # ---- addresses and lifecycle -------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self._ports_bound()[0]}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://{self.host}:{self._ports_bound()[1]}"

    def _ports_bound(self) -> tuple[int, int]:
        if self._bound is None:
            raise RuntimeError("LocalHub is not started")
        return self._bound

    async def start_async(self) -> None:
        """Start serving on the running event loop."""
        ports = []
        hosts: tuple[Literal["hub", "cdn"], ...] = ("hub", "cdn")
        for name, port in zip(hosts, self._ports, strict=True):
            app = web.Application(middlewares=[self._middleware(name)])
            app.router.add_route("*", "/{tail:.*}", self._hub if name == "hub" else self._cdn)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
            ports.append(sock.getsockname()[1])
        self._bound = (ports[0], ports[1])
        log.info("local hub on %s (cdn %s)", self.endpoint, self.cdn_endpoint)

    async def stop_async(self) -> None:
        self._bound = None  # also releases stalled transfers
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    def start(self) -> LocalHub:
        """Start serving on a background thread with its own event loop."""
        if self._background is not None:
            raise RuntimeError("LocalHub already started")
        background = BackgroundLoop(self._serve, name="LocalHub")
        try:
            background.start()
        except RuntimeError as error:  # what start_async raised, e.g. a port in use
            raise (error.__cause__ or error) from None
        self._background = background
        return self

    async def _serve(self, ready: threading.Event, stopping: asyncio.Event) -> None:
        await self.start_async()
        ready.set()
        try:
            await stopping.wait()
        finally:
            await self.stop_async()

    def stop(self) -> None:
        if self._background is not None:
            self._background.stop(timeout=10)
            self._background = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> LocalHub:
        await self.start_async()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_async()

    # ---- HTTP --------------------------------------------------------------------------------
    def _middleware(self, host: Literal["hub", "cdn"]) -> Middleware:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            headers = request.headers
            record = RequestRecord(
                request.method, request.path, headers.get("Range"), host, "Authorization" in headers
            )
            self._record(record)
            response: web.StreamResponse
            if (failure := self._take_failure(request.path)) is not None:
                response = web.json_response({"error": "Injected failure"}, status=failure)
            else:
                response = await handler(request)
            record.status = response.status
            log.debug("%s %s %s -> %s", host, request.method, request.path, response.status)
            return response

        return middleware

    async def _hub(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0]
        if raw.startswith("/api/models/") and request.method == "GET":
            return self._api(request, raw.removeprefix("/api/models/").strip("/").split("/"))
        match = _RESOLVE.fullmatch(raw)
        if match is None or request.method not in ("GET", "HEAD"):
            return web.json_response({"error": "Not Found"}, status=404)
        repo_id, rev, filename = unquote(match[1]), unquote(match[2]), unquote(match[3])
        repo, commit, denied = self._lookup(request, repo_id, rev, files=True)
        if denied is not None:
            return denied
        assert repo is not None and commit is not None
        f = commit.files.get(filename)
        if f is None:
            return _error(404, "EntryNotFound", "Entry not found", commit=commit.sha)
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{f.etag}"'}
        if f.is_lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
            if self.lfs_redirect:
                location = f"{self.cdn_endpoint}/{quote(repo_id)}/{commit.sha}/{quote(filename)}"
                return web.Response(status=302, headers={**headers, "Location": location})
        return await self._send_file(request, f, headers)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        match = _CDN.fullmatch(request.raw_path.split("?", 1)[0])
        with self._lock:  # like a signed URL: no token needed
            repo = self._repos.get(unquote(match[1])) if match else None
            commit = repo.commits.get(match[2]) if repo and match else None
            f = commit.files.get(unquote(match[3])) if commit and match else None
        if f is None or request.method not in ("GET", "HEAD"):
            return web.Response(status=404, text="NoSuchKey")
        return await self._send_file(request, f, {"ETag": f'"{f.sha256}"'})

    def _api(self, request: web.Request, segments: Sequence[str]) -> web.StreamResponse:
        split = 1 if len(segments) > 1 and segments[1] in _API_KEYWORDS else min(2, len(segments))
        repo_id, tail = "/".join(segments[:split]), list(segments[split:])
        endpoint = tail[0] if tail else "revision"
        rev = unquote(tail[1]) if len(tail) > 1 else None
        if endpoint not in _API_KEYWORDS or (endpoint == "revision" and len(tail) > 2):
            return web.json_response({"error": "Not Found"}, status=404)
        repo, commit, denied = self._lookup(request, unquote(repo_id), rev, files=False)
        if denied is not None:
            return denied
        assert repo is not None and commit is not None
        if endpoint == "refs":
            return web.json_response(hub_repo.refs(repo))
        if endpoint == "tree":
            recursive = request.query.get("recursive", "").lower() in ("1", "true")
            entries = hub_repo.tree_entries(commit, unquote("/".join(tail[2:])), recursive=recursive)
            if entries is None:
                return _error(404, "EntryNotFound", "Entry not found", commit=commit.sha)
            return web.json_response(entries)
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        return web.json_response(hub_repo.model_info(repo, commit, blobs=blobs))

    def _lookup(
        self, request: web.Request, repo_id: str, rev: str | None, *, files: bool
    ) -> tuple[HubRepo | None, Commit | None, web.Response | None]:
        """Find repo and commit, or the error response the real hub gives (auth checked first)."""
        auth = request.headers.get("Authorization")
        with self._lock:
            repo = self._repos.get(repo_id)
            rev = rev or (repo.default_branch if repo is not None else "main")
            commit = repo.resolve(rev) if repo is not None else None
        token_ok = repo is not None and auth == f"Bearer {repo.required_token}"
        if repo is None or (repo.access == "private" and not token_ok):
            status = 401 if auth is None else 404
            return None, None, _error(status, "RepoNotFound", "Repository not found")
        if repo.access == "gated" and files and not token_ok:
            message = f"Access to model {repo_id} is restricted and you are not in the authorized list."
            if auth is None:
                message = f"Access to model {repo_id} is restricted. You must be authenticated to access it."
            return None, None, _error(401 if auth is None else 403, "GatedRepo", message)
        if commit is None:
            return None, None, _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return repo, commit, None

    async def _send_file(
        self, request: web.Request, f: HubFile, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        faults = self._take_body_faults(f.path) if request.method == "GET" else BodyFaults()
        return await send_file(
            request, f, headers, faults, chunk_size=self.chunk_size, serving=lambda: self._bound is not None
        )


def _error(status: int, code: str, message: str, *, commit: str | None = None) -> web.Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json", headers=headers
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.devkit.hub", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", action="append", default=[], metavar="ORG/NAME=DIR", help="serve DIR")
    parser.add_argument("--tiny", action="append", default=[], metavar="ORG/NAME", help="serve a tiny llama")
    parser.add_argument("--gated", action="append", default=[], metavar="ORG/NAME=TOKEN")
    parser.add_argument("--private", action="append", default=[], metavar="ORG/NAME=TOKEN")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--no-lfs-redirect", action="store_true", help="serve LFS files without the CDN hop")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    hub = LocalHub(
        host=args.host, port=args.port, cdn_port=args.cdn_port, lfs_redirect=not args.no_lfs_redirect
    )
    tokens: dict[str, tuple[Access, str]] = {k: ("gated", v) for k, v in _pairs(args.gated)}
    tokens.update({k: ("private", v) for k, v in _pairs(args.private)})
    with tempfile.TemporaryDirectory(prefix="localhub-") as tmp:
        repos = _pairs(args.repo)
        for repo_id in args.tiny:
            from tests.devkit.tiny_model import make_tiny_llama

            repos.append((repo_id, str(make_tiny_llama(Path(tmp) / repo_id.replace("/", "--")))))
        for repo_id, directory in repos:
            public: tuple[Access | None, str | None] = (None, None)
            access, token = tokens.get(repo_id, public)
            sha = hub.add_repo(repo_id, Path(directory), required_token=token, access=access)
            print(f"repo {repo_id} main={sha} from {directory}", flush=True)

        async def serve() -> None:
            async with hub:
                print(f"HF_ENDPOINT={hub.endpoint}", flush=True)
                await asyncio.Event().wait()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())


def _pairs(values: Iterable[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {value!r}")
        pairs.append((key, rest))
    return pairs


if __name__ == "__main__":
    main()
