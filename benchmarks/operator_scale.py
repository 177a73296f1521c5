"""How the operator scales: Jobs for many resources at once, API requests per warm-up, requests
while idle, memory at 500 resources.

    python -m benchmarks.operator_scale [--resources 200] [--memory-at 500] [--idle 60]

The API server is the emulator of the tests (``tests/k8s``), in this process; the operator is a
separate process started as in production (``modelwarmup operator --kube-server URL``, kopf's
default, production watch timeouts), so its memory can be read from /proc and its requests told
apart from ours by User-Agent. No Job runs: Jobs stay as the operator creates them, except in the
lifecycle measurement, where this script plays the kubelet and the Job controller by hand (a Pod
with the worker's summary as its termination message, then the Job's Complete condition).

Every resource names a different model (one Job each); none names a Deployment. The lifecycle
resource asks for a branch (``main``: a resolve Job, then the warm-up Job); the others pin a
commit, so each makes exactly one Job.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kmock
from tests.k8s.client import JOBS, PODS, KubeClient, Res, wait_for
from tests.k8s.emulator import ApiServer, ApiServerEmulator, LoggedRequest

from modelwarmup.api import resource
from modelwarmup.contracts import wiring
from modelwarmup.contracts.summary import WorkerSummary

ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "crds" / "modelwarmups.modelwarmup.dev.yaml"
MW = Res(resource.API_VERSION, resource.PLURAL)
NS = "bench"
OURS = "modelwarmup-tests"  # the User-Agent prefix of this script's requests


def short_kmock_journals(keep: int = 32) -> None:
    """Keep kmock's request journals short, in this process.

    kmock records every request for its assertion DSL and matches each new request against its
    reactions by scanning that journal, so request N costs O(N): thousands of requests into a
    run, the emulator (not the operator) is the bottleneck and the timings measure it. Nothing
    here uses kmock's journal (the emulator keeps its own request log), so it is trimmed.
    """
    handle = ApiServerEmulator._handle

    async def trimmed(self: ApiServerEmulator, request: Any) -> Any:
        for journal in (self._requests, *(payload._requests for payload in self._payloads)):
            if len(journal) > 2 * keep:
                del journal[:-keep]
        return await handle(self, request)

    ApiServerEmulator._handle = trimmed  # type: ignore[method-assign]


COMMIT = "a" * 40


def warmup(name: str, revision: str = COMMIT) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"repo": f"bench/{name}", "revision": revision},
            "targets": [{"name": "cpu", "devices": "cpu"}],
            "cache": {"persistentVolumeClaim": {"claimName": "model-cache"}},
        },
    }


class Operator:
    """`modelwarmup operator` as a child process, its log in a file."""

    def __init__(self, kubeconfig: Path, log: Path) -> None:
        env = {
            **os.environ,
            "MODELWARMUP_METRICS_PORT": "0",
            "MODELWARMUP_LIVENESS_PORT": "0",
            "MODELWARMUP_WORKER_IMAGE": "modelwarmup/worker:bench",
        }
        self.log = log
        with log.open("wb") as out:
            argv = [sys.executable, "-m", "modelwarmup.cli", "operator", "--kubeconfig", str(kubeconfig)]
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def started_watch(server: ApiServer, watch: LoggedRequest) -> float:
    """When the previous watch on the same resource began (a reconnect's predecessor)."""
    before = [
        r
        for r in server.requests(exclude_user_agent=OURS)
        if r.is_watch and r.resource == watch.resource and r.seq < watch.seq
    ]
    return before[-1].time if before else watch.time


def operator_requests(server: ApiServer, since: int) -> list[LoggedRequest]:
    return server.requests(since, exclude_user_agent=OURS)


def summarize(requests: Iterable[LoggedRequest]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for entry in requests:
        who = "kopf" if entry.user_agent.startswith("kopf") else "operator"
        what = entry.resource or entry.path
        sub = f"/{entry.subresource}" if entry.subresource else ""
        verb = "WATCH" if entry.is_watch else entry.method
        counts[f"{who:8} {verb:6} {what}{sub}"] += 1
    return counts


def complete_job(kube: KubeClient, job: dict[str, Any], name: str) -> None:
    """Play kubelet and Job controller: a finished Pod with the worker's summary, then Complete."""
    meta = job["metadata"]
    if (meta.get("labels") or {}).get(wiring.LABEL_ROLE) == wiring.ROLE_RESOLVE:
        summary = WorkerSummary(
            ok=True, reason="Resolved", commit=COMMIT, pins=(f"bench/{name}@main={COMMIT}",)
        )
    else:
        summary = WorkerSummary(
            ok=True,
            reason="Warmed",
            message=f"warmed bench/{name}",
            entry_key=f"bench--{name}-0123456789abcdef/portable",
            model_key=f"bench--{name}-0123456789abcdef",
            platform_key="portable",
            commit=COMMIT,
            bytes=1234567,
            download_seconds=1.5,
            compile_seconds=0.0,
        )
    labels = {
        **job["spec"]["template"]["metadata"]["labels"],
        "job-name": meta["name"],
        "batch.kubernetes.io/job-name": meta["name"],
    }
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }
    pod = kube.create(
        PODS,
        {
            "metadata": {"name": f"{meta['name']}-x1", "labels": labels, "ownerReferences": [owner]},
            "spec": job["spec"]["template"]["spec"],
        },
        namespace=NS,
    )
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    terminated = {
        "exitCode": 0,
        "reason": "Completed",
        "message": summary.termination_message(),
        "finishedAt": now,
    }
    kube.patch_status(
        PODS,
        pod["metadata"]["name"],
        {
            "phase": "Succeeded",
            "containerStatuses": [{"name": "warm-cache", "state": {"terminated": terminated}}],
        },
        namespace=NS,
    )
    complete = [
        {"type": t, "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now}
        for t in ("SuccessCriteriaMet", "Complete")
    ]
    kube.patch_status(
        JOBS,
        meta["name"],
        {"startTime": now, "completionTime": now, "succeeded": 1, "active": 0, "conditions": complete},
        namespace=NS,
    )


def ready(kube: KubeClient, name: str) -> bool:
    obj = kube.get(MW, name, namespace=NS)
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def job_count(server: ApiServer) -> int:
    """How many Jobs exist (read in the server's loop, without copying them or a request)."""
    res = kmock.resource(str(JOBS))
    return server.call(lambda emulator: sum(1 for key, _ in emulator._live_items() if key[0] == res))


def create_all(kube: KubeClient, names: list[str], threads: int = 8) -> None:
    """Apply many resources at once, as `kubectl apply -f dir/` with a few clients would."""
    chunks = [names[i::threads] for i in range(threads)]
    workers = [
        threading.Thread(
            target=lambda chunk: [kube.create(MW, warmup(n), namespace=NS) for n in chunk], args=(c,)
        )
        for c in chunks
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def run(resources: int, memory_at: int, idle: float, out: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    short_kmock_journals()
    with ApiServer() as server:  # bookmarks every 60 s, as real servers send them
        server.install_crd(str(CRD_PATH))
        kube = server.client()
        kube.create(Res("v1", "namespaces", namespaced=False), {"metadata": {"name": NS}})
        operator = Operator(server.kubeconfig(), out / "operator.log")
        try:
            server.wait_watching(MW, JOBS, user_agent="kopf/", timeout=60)
            server.wait_quiet(1.0)
            figures["rss_mib_empty"] = round(operator.rss_mib(), 1)

            # 1. One warm-up's lifecycle: create -> resolve Job -> complete -> Job -> complete -> Ready.
            mark = server.mark()
            kube.create(MW, warmup("lifecycle", revision="main"), namespace=NS)
            for resolving in (True, False):

                def next_job(resolving: bool = resolving) -> dict[str, Any] | None:
                    jobs = kube.list(JOBS, namespace=NS)
                    role = lambda j: (j["metadata"].get("labels") or {}).get(wiring.LABEL_ROLE)  # noqa: E731
                    return next((j for j in jobs if (role(j) == wiring.ROLE_RESOLVE) == resolving), None)

                job = wait_for(next_job, timeout=30)
                server.wait_quiet(0.5)
                complete_job(kube, job, "lifecycle")
            wait_for(lambda: ready(kube, "lifecycle"), timeout=30)
            server.wait_quiet(1.0)
            lifecycle = operator_requests(server, mark)
            figures["lifecycle_requests"] = sum(1 for r in lifecycle if not r.is_watch)
            figures["lifecycle_by_kind"] = dict(
                sorted(summarize(r for r in lifecycle if not r.is_watch).items())
            )

            # 2. Many at once: time until every Job exists.
            names = [f"m{i:04d}" for i in range(resources)]
            cpu_before = operator.cpu_seconds()
            mark = server.mark()
            started = time.monotonic()
            create_all(kube, names)
            applied = time.monotonic() - started
            wait_for(lambda: job_count(server) >= resources + 2, timeout=600, interval=0.1)
            figures["resources"] = resources
            figures["apply_seconds"] = round(applied, 2)
            figures["seconds_until_all_jobs"] = round(time.monotonic() - started, 2)
            figures["seconds_after_last_apply"] = round(figures["seconds_until_all_jobs"] - applied, 2)
            server.wait_quiet(2.0, timeout=300)
            figures["seconds_until_quiet"] = round(time.monotonic() - started, 2)
            figures["operator_cpu_seconds"] = round(operator.cpu_seconds() - cpu_before, 2)
            burst = [r for r in operator_requests(server, mark) if not r.is_watch]
            figures["burst_requests"] = len(burst)
            figures["burst_requests_per_resource"] = round(len(burst) / resources, 2)
            figures["rss_mib_at_resources"] = round(operator.rss_mib(), 1)

            # 3. Idle: every warm-up runs (the Job controller has started each Job's pod: active 1)
            # and nothing changes; what does the operator ask? Podless Jobs would be rechecked for
            # FailedCreate Events (the pending-recheck timer), which a real cluster has for a second.
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for job in kube.list(JOBS, namespace=NS):
                if not (job.get("status") or {}).get("conditions"):
                    kube.patch_status(
                        JOBS, job["metadata"]["name"], {"startTime": now, "active": 1}, namespace=NS
                    )
            server.wait_quiet(2.0, timeout=300)
            mark = server.mark()
            time.sleep(idle)
            quiet = operator_requests(server, mark)
            figures["idle_seconds"] = idle
            figures["idle_requests"] = sum(1 for r in quiet if not r.is_watch)
            figures["idle_new_watches"] = [
                f"{r.resource} after {r.time - started_watch(server, r):.0f}s" for r in quiet if r.is_watch
            ]
            figures["open_watches"] = sorted(
                {
                    r.resource or ""
                    for r in server.requests(exclude_user_agent=OURS)
                    if r.is_watch and r.ended is None
                }
            )

            # 4. Memory with more resources.
            more = [f"m{i:04d}" for i in range(resources, memory_at)]
            create_all(kube, more)
            wait_for(lambda: job_count(server) >= memory_at + 2, timeout=900, interval=0.1)
            server.wait_quiet(2.0, timeout=300)
            figures["memory_resources"] = memory_at
            figures["rss_mib_at_memory_resources"] = round(operator.rss_mib(), 1)
        finally:
            operator.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.operator_scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--memory-at", type=int, default=500)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as scratch:
        figures = run(args.resources, args.memory_at, args.idle, Path(scratch))
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for sub, count in value.items():
                print(f"  {count:4}  {sub}")
        else:
            print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
