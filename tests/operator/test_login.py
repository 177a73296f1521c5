"""`modelwarmup operator`, the command users and the chart run, logs in as any kopf operator does.

Each test starts the real console script as a child process against the emulated API server,
which serves only HTTPS and answers 401 to a request without valid credentials, as a real
kube-apiserver does. Login sources: a kubeconfig with a token, one with a client certificate, and
the in-cluster ServiceAccount files. A configuration that would log in anonymously, or a server
whose certificate the client cannot verify, is refused with a clear message.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.k8s.access import ServerIdentity
from tests.k8s.client import KubeClient
from tests.k8s.emulator import ApiServer

from . import helpers
from .helpers import MW, NS, wait_for

COMMAND = Path(sys.executable).with_name("modelwarmup")  # the console script pip installed


class OperatorProcess:
    """`modelwarmup operator` as a child process; its output kept for the failure message."""

    def __init__(self, tmp_path: Path, env: Mapping[str, str], *args: str) -> None:
        self.log = tmp_path / "operator.log"
        base = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
        full_env = {
            **base,
            "HOME": str(tmp_path),  # no ~/.kube/config of this machine
            "MODELWARMUP_METRICS_PORT": "0",
            "MODELWARMUP_LIVENESS_PORT": "0",
            "MODELWARMUP_WORKER_IMAGE": helpers.WORKER_IMAGE,
            **env,
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(COMMAND), "operator", *args], env=full_env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def processes() -> Iterator[list[OperatorProcess]]:
    started: list[OperatorProcess] = []
    yield started
    for process in started:
        process.stop()


def _reconciles(cluster: ApiServer, kube: KubeClient, operator: OperatorProcess, name: str) -> None:
    """The operator sees a new resource, writes its status and creates its warm-up Job."""
    kube.create(MW, helpers.warmup(name), namespace=NS)
    wait_for(
        lambda: helpers.condition(kube, name).get("reason") in ("JobPending", "Warming"),
        timeout=60,
        message=lambda: f"no status on {name}; operator output:\n{operator.output()[-3000:]}",
    )
    # Its first Job resolves main to a commit (no kubelet here: it stays pending).
    assert [j["metadata"]["ownerReferences"][0]["name"] for j in helpers.resolve_jobs(kube)] == [name]
    unauthorized = [r for r in cluster.requests() if r.status == 401]
    assert unauthorized == [], unauthorized


def test_with_a_kubeconfig_token_over_verified_tls(
    cluster: ApiServer, kube: KubeClient, tmp_path: Path, processes: list[OperatorProcess]
) -> None:
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
    processes.append(operator := OperatorProcess(tmp_path, {"KUBECONFIG": str(kubeconfig)}))
    _reconciles(cluster, kube, operator, "via-kubeconfig")
    assert cluster.url.startswith("https://")


def test_with_the_kubeconfig_flag_and_a_client_certificate(
    cluster: ApiServer, kube: KubeClient, tmp_path: Path, processes: list[OperatorProcess]
) -> None:
    kubeconfig = cluster.access.write_kubeconfig(
        tmp_path / "kubeconfig", user=cluster.identity.client_certificate_user("modelwarmup-operator")
    )
    processes.append(operator := OperatorProcess(tmp_path, {}, "--kubeconfig", str(kubeconfig)))
    _reconciles(cluster, kube, operator, "via-certificate")


def test_in_cluster_with_the_pods_service_account(
    cluster: ApiServer, kube: KubeClient, tmp_path: Path, processes: list[OperatorProcess]
) -> None:
    """As in the chart's Deployment: KUBERNETES_SERVICE_* set by the kubelet, the token mounted."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(cluster.access.token)
    (account / "ca.crt").write_bytes(cluster.access.ca_pem)
    (account / "namespace").write_text(NS)
    port = cluster.url.rsplit(":", 1)[1]
    env = {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "MODELWARMUP_SERVICE_ACCOUNT_DIR": str(account),
    }
    processes.append(operator := OperatorProcess(tmp_path, env))
    _reconciles(cluster, kube, operator, "in-cluster")


def test_credentials_that_would_be_anonymous_are_refused_at_once(cluster: ApiServer, tmp_path: Path) -> None:
    kubeconfig = cluster.access.write_kubeconfig(tmp_path / "kubeconfig", user={})
    mark = cluster.mark()
    operator = OperatorProcess(tmp_path, {"KUBECONFIG": str(kubeconfig)})
    assert operator.wait(60) == 10, operator.output()
    assert "refusing to send anonymous requests" in operator.output()
    assert cluster.requests(since=mark) == [], "no request may leave without credentials"


def test_no_kubeconfig_and_not_in_a_pod_is_a_clear_error(tmp_path: Path) -> None:
    operator = OperatorProcess(tmp_path, {})
    assert operator.wait(60) == 10, operator.output()
    assert "modelwarmup operator: NoCredentials: cannot load Kubernetes credentials" in operator.output()


def test_a_server_whose_certificate_cannot_be_verified_gets_no_token(
    cluster: ApiServer, tmp_path: Path, processes: list[OperatorProcess]
) -> None:
    other_ca = ServerIdentity.create().ca.cert_pem.bytes()
    kubeconfig = cluster.access.write_kubeconfig(tmp_path / "kubeconfig", ca_pem=other_ca)
    mark = cluster.mark()
    processes.append(operator := OperatorProcess(tmp_path, {"KUBECONFIG": str(kubeconfig)}))
    deadline = time.monotonic() + 30
    while operator.process.poll() is None and "CERTIFICATE_VERIFY_FAILED" not in operator.output():
        assert time.monotonic() < deadline, operator.output()
        time.sleep(0.2)
    assert "CERTIFICATE_VERIFY_FAILED" in operator.output()
    assert cluster.requests(since=mark) == [], "the TLS handshake fails before any request is sent"


def test_a_wrong_token_is_answered_401_and_the_operator_stops(
    cluster: ApiServer, tmp_path: Path, processes: list[OperatorProcess]
) -> None:
    kubeconfig = cluster.access.write_kubeconfig(tmp_path / "kubeconfig", token="not-the-token")
    mark = cluster.mark()
    processes.append(operator := OperatorProcess(tmp_path, {"KUBECONFIG": str(kubeconfig)}))
    assert operator.wait(90) != 0, operator.output()
    assert {r.status for r in cluster.requests(since=mark)} == {401}
