"""
Run a real kopf operator in a background thread against an API server, from a kubeconfig.

* A fresh ``kopf.OperatorRegistry`` per run (never the global one), filled by a ``register``
  callback: ``def register(registry): @kopf.on.create(..., registry=registry) ...``.
* It logs in as the product does, from a kubeconfig file (HTTPS, the server's CA, a token):
  ``modelwarmup.controller.credentials``' login, added unless ``register`` adds its own (the
  product's ``handlers.register`` does). A bare ``OperatorRegistry`` has no login handlers at
  all, and the piggybacking ones of kopf's default registry would read the machine's
  ``~/.kube/config``/``KUBECONFIG`` — never that.
* Fast settings (:func:`fast_settings`): standalone (no peering), events posted, short watch
  and network timeouts, quick backoffs. Tune further with ``configure=``.
* ``kopf.operator(...)`` on its own loop (:class:`tests.background.BackgroundLoop`); stopped via its
  ``stop_flag``.
  :meth:`OperatorThread.restart` stops it and starts a fresh operator (new registry, new
  in-memory state, same ``register``) against the same server: the restart of a pod.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import kopf

from modelwarmup.controller import credentials
from tests.background import BackgroundLoop

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
        self._background: BackgroundLoop | None = None

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
        return self._background is not None and self._background.alive

    def start(self, timeout: float = 10.0) -> OperatorThread:
        """Start a fresh operator; ready once its startup activities (login included) are done.

        kopf raises its ready flag before the watches are open: wait for those on the server
        (see ApiServer.wait_watching()).
        """
        if self.alive:
            raise RuntimeError("The operator is already running.")
        self.registry = self._build_registry()
        self.settings = self._build_settings()
        self.runs += 1
        self._background = BackgroundLoop(self._main, name=f"{self.name}-{self.runs}")
        self._background.start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully via kopf's stop flag; re-raise if the operator crashed."""
        if self._background is not None:
            self._background.stop(timeout)

    def restart(self, timeout: float = 10.0) -> OperatorThread:
        """Stop, then start anew: fresh registry & memories, the same server state."""
        self.stop(timeout)
        return self.start(timeout)

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _main(self, ready: threading.Event, stopping: asyncio.Event) -> None:
        await kopf.operator(
            registry=self.registry,
            settings=self.settings,
            clusterwide=self.clusterwide,
            namespaces=self.namespaces,
            stop_flag=stopping,
            ready_flag=ready,
            memo=self.memo,  # standalone or peering: as the settings say (fast_settings: standalone)
        )
