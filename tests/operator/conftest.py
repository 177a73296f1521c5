"""
Fixtures for integration tests of the real operator: kopf over HTTP against the emulated API
server (``tests/k8s``), warm-up Jobs run by the local kubelet, model repos served by a LocalHub.

* ``cluster`` — the API server with the generated ModelWarmup CRD installed; at teardown, every
  request the operator made must be allowed by docs/rbac.md (:mod:`.rbac`).
* ``hub`` — a LocalHub (session-wide) serving a generated tiny Llama as ``devkit/tiny-llama``.
* ``kubelet`` — a :class:`~tests.k8s.kubelet.LocalKubelet` running the Jobs, with ``HF_ENDPOINT``
  pointing at the hub.
* ``operator`` — the operator (``handlers.register``) started against the cluster; a crash
  fails the test at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelwarmup.controller import handlers
from modelwarmup.controller.settings import OperatorSettings
from tests.devkit.hub import LocalHub
from tests.devkit.tiny_model import make_tiny_llama
from tests.k8s.conftest import api_server, kube, run_operator
from tests.k8s.emulator import ApiServer
from tests.k8s.kopf_runner import OperatorThread
from tests.k8s.kubelet import LocalKubelet

from . import helpers, rbac

__all__ = ["api_server", "kube", "run_operator"]  # the tests/k8s fixtures, used here too


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def hub(tiny_model: Path) -> Iterator[LocalHub]:
    with LocalHub() as hub:
        hub.add_repo(helpers.TINY_REPO, tiny_model, tags=["v1"])
        yield hub


@pytest.fixture
def cluster(api_server: ApiServer, request: pytest.FixtureRequest) -> Iterator[ApiServer]:
    """The API server with the CRD; afterwards, every request the operator made was allowed by
    docs/rbac.md (with the peering rules for a test marked ``peering``)."""
    api_server.install_crd(str(helpers.CRD_PATH))
    yield api_server
    peering = request.node.get_closest_marker("peering") is not None
    assert not rbac.denied(api_server.requests(), peering=peering), rbac.denied(api_server.requests())


@pytest.fixture
def kubelet(cluster: ApiServer, hub: LocalHub, tmp_path: Path) -> Iterator[LocalKubelet]:
    hub.reset_faults()
    # Several Jobs at once, as a cluster runs them: a held warm-up must not keep a resolve Job waiting.
    with LocalKubelet(
        cluster.access, root=tmp_path / "node", default_env={"HF_ENDPOINT": hub.endpoint}, parallel=4
    ) as kubelet:
        yield kubelet
    assert not kubelet.errors, kubelet.errors


@pytest.fixture
def settings(cluster: ApiServer) -> OperatorSettings:
    return helpers.operator_settings(cluster.kubeconfig())


@pytest.fixture
def start_operator(
    cluster: ApiServer, run_operator: Callable[..., OperatorThread], settings: OperatorSettings
) -> Callable[[], OperatorThread]:
    def start() -> OperatorThread:
        return run_operator(
            lambda registry: handlers.register(registry, settings),
            watching=(helpers.MW, helpers.JOBS),
            login=False,  # the product's handlers log in themselves
        )

    return start


@pytest.fixture
def operator(start_operator: Callable[[], OperatorThread]) -> OperatorThread:
    return start_operator()
