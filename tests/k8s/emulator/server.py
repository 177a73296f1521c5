"""The emulator in a background thread, over HTTPS, usable from synchronous tests and subprocesses."""

from __future__ import annotations

import asyncio
import copy
import functools
import ssl
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import kmock
import yaml

from ...background import BackgroundLoop
from .. import access
from .common import (
    LoggedRequest,
    T,
    api_version_of,
    resource_str,
)
from .core import ApiServerEmulator


class _TlsTestServer(aiohttp.test_utils.RawTestServer):
    """aiohttp's raw test server on TLS (kmock.Server builds it with ``server_cls``)."""

    def __init__(self, handler: Any, *, ssl_context: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._ssl_context = ssl_context

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("ssl", self._ssl_context)
        await super().start_server(loop=loop, **kwargs)


class ApiServer:
    """
    The emulator in a background thread with its own event loop, usable from synchronous code.

    Usage::

        with ApiServer() as server:
            server.install_crd(crd_body)
            client = server.client()
            client.create(JOBS, {...}, namespace='ns')
            assert server.requests(since=mark, user_agent='kopf')

    Everything on the emulator itself must run in its loop: use :meth:`call`.
    """

    def __init__(
        self,
        *,
        bundled_resources: bool = True,
        strict_namespaces: bool = False,
        gc_delay: float = 0.0,
        bookmark_interval: float | None = 60.0,
        watch_cache_size: int = 10_000,
        host: str = "127.0.0.1",
    ) -> None:
        self._options = dict(
            strict_namespaces=strict_namespaces,
            gc_delay=gc_delay,
            bookmark_interval=bookmark_interval,
            watch_cache_size=watch_cache_size,
        )
        self._bundled = bundled_resources
        self._host = host
        self._background = BackgroundLoop(self._serve, name="k8s-api-emulator")
        self._emulator: ApiServerEmulator | None = None
        self.identity = access.ServerIdentity.create(host)
        self._files = tempfile.TemporaryDirectory(prefix="k8s-emulator-")
        self.url = ""

    # Lifecycle.

    def start(self, timeout: float = 10.0) -> ApiServer:
        self._background.start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._background.stop(timeout)
        self._files.cleanup()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _serve(self, ready: threading.Event, stopping: asyncio.Event) -> None:
        emulator = ApiServerEmulator(tokens=frozenset({self.identity.token}), **self._options)  # type: ignore[arg-type]
        if self._bundled:
            with warnings.catch_warnings():  # kmock uses the deprecated importlib.resources API
                warnings.simplefilter("ignore", DeprecationWarning)
                emulator.resources.load_bundled()  # built-ins of a recent K3s, as kmock ships
        # NB: kmock.Server also hooks aiohttp's DNS resolution for its own host:port
        # (process-wide, LIFO): harmless for 127.0.0.1, but stop servers in reverse order.
        tls = functools.partial(_TlsTestServer, ssl_context=self.identity.server_context)
        async with emulator, kmock.Server(emulator, host=self._host, server_cls=tls) as server:
            self._emulator = emulator
            self.url = str(server.url).rstrip("/")
            ready.set()
            await stopping.wait()
            emulator.close_watches()
            await asyncio.sleep(0.05)  # let the watch streams end before the server closes

    # Access to the emulator.

    @property
    def emulator(self) -> ApiServerEmulator:
        if self._emulator is None:
            raise RuntimeError("The API server is not started.")
        return self._emulator

    def call(self, fn: Callable[[ApiServerEmulator], T], timeout: float = 10.0) -> T:
        """Run ``fn(emulator)`` in the server's loop (a sync fn or an async one) and return."""
        return self._background.call(lambda: fn(self.emulator), timeout)

    def attach_log(self, namespace: str, pod: str, container: str, path: Path) -> None:
        """Serve ``path`` as that container's log (``pods/log``), as its node's kubelet would."""

        def attach(em: ApiServerEmulator) -> None:
            em.pod_logs[(namespace, pod, container)] = path

        self.call(attach)

    @property
    def access(self) -> access.Access:
        """The URL, CA and token a client needs (see :mod:`.access`)."""
        return self.identity.access(self.url)

    def client(self, user_agent: str | None = None) -> Any:
        from ..client import TEST_USER_AGENT, KubeClient

        return KubeClient(self.access, user_agent=user_agent or TEST_USER_AGENT)

    def install_crd(self, crd: Mapping[str, Any] | str) -> dict[str, Any]:
        """Create a CRD over HTTP (a dict, YAML text, or a path to a YAML file)."""
        if isinstance(crd, str):
            text = crd
            if "\n" not in crd:
                with open(crd, encoding="utf-8") as f:
                    text = f.read()
            crd = yaml.safe_load(text)
        from ..client import CRDS as CRDS_RES

        assert isinstance(crd, Mapping)
        result: dict[str, Any] = self.client().create(CRDS_RES, dict(crd))
        return result

    def kubeconfig(self, path: str | Path | None = None, namespace: str = "default") -> Path:
        """A kubeconfig for this server (the operator's, a subprocess's, ``kubernetes.config``'s).

        Without a path: one file in the server's own folder, removed when the server stops.
        """
        path = Path(path) if path is not None else Path(self._files.name) / f"kubeconfig-{namespace}"
        return self.access.write_kubeconfig(path, namespace=namespace)

    # The request log (for assertions and benchmarks).

    def mark(self) -> int:
        """A position in the request log: pass it as ``since=`` later."""
        return len(self.emulator.request_log)

    def requests(
        self,
        since: int = 0,
        *,
        user_agent: str | None = None,
        exclude_user_agent: str | None = None,
        method: str | None = None,
        action: str | None = None,
        resource: str | None = None,
        writes_only: bool = False,
    ) -> list[LoggedRequest]:
        """Requests since a mark, filtered (user agents are matched as prefixes)."""
        return [
            entry
            for entry in list(self.emulator.request_log)[since:]
            if user_agent is None or entry.user_agent.startswith(user_agent)
            if exclude_user_agent is None or not entry.user_agent.startswith(exclude_user_agent)
            if method is None or entry.method == method.upper()
            if action is None or entry.action == action.upper()
            if resource is None or entry.resource == resource
            if not writes_only or entry.is_write
        ]

    def watching(self, resource: str, *, since: int = 0, user_agent: str | None = None) -> bool:
        """Whether a watch on the resource (e.g. 'batch/v1/jobs') is open now."""
        return any(
            entry.ended is None
            for entry in self.requests(since, action="WATCH", resource=resource, user_agent=user_agent)
        )

    def wait_watching(
        self, *resources: object, since: int = 0, user_agent: str | None = "kopf/", timeout: float = 10.0
    ) -> None:
        """Wait until watches on all the resources (``Res`` or 'batch/v1/jobs') are open."""
        deadline = time.monotonic() + timeout
        wanted = [str(res) for res in resources]
        while not all(self.watching(res, since=since, user_agent=user_agent) for res in wanted):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"No open watches for {wanted} since #{since}:\n"
                    + self.format_requests(self.requests(since))
                )
            time.sleep(0.01)

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 10.0) -> int:
        """
        Wait until no request has arrived or run for ``quiet`` seconds; return a mark then.

        Open watches do not count as activity. For idle measurements::

            mark = server.wait_quiet()
            time.sleep(5)
            assert server.requests(mark) == []
        """
        deadline = time.monotonic() + timeout
        while True:
            log = list(self.emulator.request_log)
            now = time.monotonic()
            active = [entry for entry in log if not entry.is_watch]
            busy = any(entry.ended is None for entry in active[-100:])
            last = max((entry.ended or now for entry in active[-100:]), default=0.0)
            last = max([last] + [entry.time for entry in log[-1:]])
            if not busy and now - last >= quiet:
                return len(log)
            if now > deadline:
                raise TimeoutError(f"The API server was not quiet for {quiet}s in {timeout}s.")
            time.sleep(0.01)

    def objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """A snapshot of the live objects of a resource (bypassing HTTP and the request log)."""
        res = kmock.resource(resource)

        def collect(em: ApiServerEmulator) -> list[dict[str, Any]]:
            return [
                copy.deepcopy(obj)
                for key, obj in em._live_items()
                if key[0] == res and (namespace is None or key[1] == namespace)
            ]

        return self.call(collect)

    @staticmethod
    def format_requests(entries: Iterable[LoggedRequest]) -> str:
        return "\n".join(str(entry) for entry in entries)


__all__ = ["ApiServer", "ApiServerEmulator", "LoggedRequest", "api_version_of", "resource_str"]
