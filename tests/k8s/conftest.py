"""
Fixtures for tests that run the real kopf operator over HTTP against an emulated API server.

* ``api_server`` — :class:`~.emulator.ApiServer`, started for the test, stopped after it.
* ``kube`` — :class:`~.client.KubeClient` for that server (the test's "kubectl").
* ``run_operator`` — a factory: ``run_operator(register, watching=(res, ...), **kwargs)``
  starts a kopf :class:`~.kopf_runner.OperatorThread` against ``api_server`` and waits until
  its watches on ``watching`` are open; all are stopped at teardown (before the server),
  and a crashed operator fails the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from .client import KubeClient
from .emulator import ApiServer
from .kopf_runner import OperatorThread, Register


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


@pytest.fixture
def kube(api_server: ApiServer) -> KubeClient:
    client: KubeClient = api_server.client()
    return client


@pytest.fixture
def run_operator(api_server: ApiServer) -> Iterator[Callable[..., OperatorThread]]:
    operators: list[OperatorThread] = []

    def start(register: Register, *, watching: Iterable[object] = (), **kwargs: Any) -> OperatorThread:
        operator = OperatorThread(api_server.kubeconfig(), register, **kwargs)
        operators.append(operator)
        mark = api_server.mark()
        operator.start()
        api_server.wait_watching(*watching, since=mark)
        return operator

    yield start

    errors: list[BaseException] = []
    for operator in reversed(operators):
        try:
            operator.stop()
        except BaseException as e:
            errors.append(e)
    if errors:
        raise errors[0]
