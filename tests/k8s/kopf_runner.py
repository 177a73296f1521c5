"""
Run a real kopf operator in a background thread against an API server URL.

* A fresh ``kopf.OperatorRegistry`` per run (never the global one), filled by a ``register``
  callback: ``def register(registry): @kopf.on.create(..., registry=registry) ...``.
* It logs in as the product does, from a kubeconfig file (HTTPS, the server's CA, a token):
  ``modelwarmup.controller.credentials``' login, added unless ``register`` adds its own (the
  product's ``handlers.register`` does). A bare ``OperatorRegistry`` has no login handlers at
  all, and the piggybacking ones of kopf's default registry would read the machine's
  ``~/.kube/config``/``KUBECONFIG`` — never that.
* Fast settings (:func:`fast_settings`): standalone (no peering), events posted, short watch
  and network timeouts, quick backoffs. Tune further with ``configure=``.
* ``kopf.operator(...)`` in its own event loop; stopped via its ``stop_flag``.
  :meth:`OperatorThread.restart` stops it and starts a fresh operator (new registry, new
  in-memory state, same ``register``) against the same server: the restart of a pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import kopf

from modelwarmup.controller import credentials

Register = Callable[[kopf.OperatorRegistry], None]
Configure = Callable[[kopf.OperatorSettings], None]

OPERATOR_USER_AGENT_PREFIX = "kopf/"  # kopf's own User-Agent, as seen in the request log


def fast_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True  # no KopfPeering resources, no peering requests
    settings.posting.enabled = True  # k8s Events for handler outcomes & logger.info() calls
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 30  # ?timeoutSeconds= : watches reconnect (and resume)
    settings.watching.client_timeout = 40
    settings.watching.connect_timeout = 2
    settings.watching.reconnect_backoff = 0.05
    settings.networking.request_timeout = 10
    settings.networking.connect_timeout = 2
    settings.networking.error_backoffs = (0.1, 0.2, 0.5, 1.0)
    settings.queueing.exit_timeout = 0.5  # per-object workers exit quickly on stop
    settings.background.instant_exit_timeout = 0.1
    settings.process.ultimate_exiting_timeout = 5
    return settings


class OperatorCrashed(RuntimeError):
    pass


class OperatorThread:
    """One kopf operator in a thread: ``start()``, ``stop()``, ``restart()``, or ``with``."""

    def __init__(
        self,
        kubeconfig: Path,
        register: Register,
        *,
        login: bool = True,
        configure: Configure | None = None,
        clusterwide: bool = True,
        namespaces: Collection[str] = (),
        memo: Any = None,
        name: str = "operator",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.login = login
        self.register = register
        self.configure = configure
        self.clusterwide = clusterwide and not namespaces
        self.namespaces = list(namespaces)
        self.memo = memo
        self.name = name
        self.runs = 0  # how many times it was started
        self.registry: kopf.OperatorRegistry | None = None
        self.settings: kopf.OperatorSettings | None = None
        self.exception: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._loop_ready = threading.Event()

    # The building blocks of one run.

    def _build_registry(self) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        if self.login:
            credentials.register_login(registry, credentials.Source(kubeconfig=str(self.kubeconfig)))
        self.register(registry)
        return registry

    def _build_settings(self) -> kopf.OperatorSettings:
        settings = fast_settings()
        if self.configure is not None:
            self.configure(settings)
        return settings

    # Lifecycle.

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> OperatorThread:
        if self.alive:
            raise RuntimeError("The operator is already running.")
        self.registry = self._build_registry()
        self.settings = self._build_settings()
        self.exception = None
        self._ready.clear()
        self._loop_ready.clear()
        self.runs += 1
        self._thread = threading.Thread(
            target=self._thread_main, daemon=True, name=f"{self.name}-{self.runs}"
        )
        self._thread.start()
        self._loop_ready.wait(timeout)
        # kopf raises its ready flag after the startup activities (incl. login), i.e. before
        # the watches are open: wait for those on the server (see ApiServer.watching()).
        while not self._ready.wait(0.05):
            if not self.alive:
                self._raise_if_crashed()
                raise OperatorCrashed("The operator exited before it became ready.")
            timeout -= 0.05
            if timeout <= 0:
                raise TimeoutError("The operator did not become ready in time.")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully via kopf's stop flag; re-raise if the operator crashed."""
        if self._thread is None:
            return
        if self._loop is not None and self._stop_event is not None and not self._loop.is_closed():
            # RuntimeError: the loop is closed already, i.e. the operator exited by itself.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("The operator did not stop in time.")
        self._thread = None
        self._raise_if_crashed()

    def restart(self, timeout: float = 10.0) -> OperatorThread:
        """Stop, then start anew: fresh registry & memories, the same server state."""
        self.stop(timeout)
        return self.start(timeout)

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _raise_if_crashed(self) -> None:
        if self.exception is not None:
            raise OperatorCrashed(f"The operator failed: {self.exception!r}") from self.exception

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:
            self.exception = e
        finally:
            try:
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        self._loop_ready.set()
        await kopf.operator(
            registry=self.registry,
            settings=self.settings,
            clusterwide=self.clusterwide,
            namespaces=self.namespaces,
            stop_flag=self._stop_event,
            ready_flag=self._ready,
            memo=self.memo,
            standalone=True,
        )
