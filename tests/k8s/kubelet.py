"""
A local Job runner for tests: it plays the Job controller and the kubelet for batch/v1 Jobs.

The emulated API server has no controllers, so nothing would ever run the Jobs the operator
creates. :class:`LocalKubelet` watches Jobs and, for each one, does what kube-controller-manager's
Job controller and a node's kubelet do together, with the real container command run as a local
subprocess:

* **Job controller**: creates a Pod per attempt (the template's labels plus ``job-name`` /
  ``batch.kubernetes.io/job-name`` / ``controller-uid``, an ownerReference to the Job), keeps the
  Job's ``status`` (``startTime``, ``active``, ``ready``, ``succeeded``, ``failed``,
  ``completionTime``, and the conditions ``SuccessCriteriaMet``+``Complete`` or
  ``FailureTarget``+``Failed`` with reason ``PodFailurePolicy``, ``BackoffLimitExceeded`` or
  ``DeadlineExceeded``), retries failed pods up to ``backoffLimit`` (with a short fixed backoff
  instead of the real 10 s exponential one) and applies ``podFailurePolicy`` rules on exit codes
  (``FailJob``, ``Ignore``, ``Count``) in order, first match wins, as the real controller does.
* **kubelet**: runs the single container's ``command + args`` (``modelwarmup`` is mapped to
  ``sys.executable -m modelwarmup.cli``; the image is ignored: the container runs this checkout),
  with the volumes mapped to host folders: a PersistentVolumeClaim to one folder per claim (shared
  by every pod naming it, as a ReadWriteMany volume is), an emptyDir to a folder per pod, ``subPath``
  honoured. Every argument and environment value that is a mount path (or below one), and the
  ``terminationMessagePath``, is rewritten to the host path. The environment is the container's
  ``env`` (``value``; ``valueFrom.secretKeyRef`` / ``configMapKeyRef`` read from the API server;
  ``fieldRef`` to the pod's name and namespace), on top of a minimal base (``PATH``, ``LANG``,
  ``HOME`` and ``TMPDIR`` in the pod's folder), plus ``default_env`` for names the container
  does not set (the test's ``HF_ENDPOINT`` for a LocalHub). Nothing else of the host's environment
  leaks in. The Pod's status then carries ``state.terminated`` with ``exitCode`` and ``message``:
  the termination-message file, or with ``FallbackToLogsOnError`` the log tail of a failed
  container whose file is empty.

Init containers run in order before the container, each to its end; the first that fails fails
the pod (its exit code and log tail are the pod's). Not emulated: scheduling (nodeSelector,
tolerations, resources, runtimeClassName are ignored), security contexts (the process runs as the
test's user), images, more than one container, ``parallelism``/``completions`` other than 1, suspension and pod deletion by users
(a deleted Job's running process is killed). A missing Secret keeps the pod ``Pending`` with
``CreateContainerConfigError``, as on a real node. A pod the API server refuses (a ServiceAccount
that does not exist) is a ``FailedCreate`` Warning Event on the Job, retried, as the Job
controller does.

Use it as a context manager (``with LocalKubelet(url, root=tmp) as kubelet:``) or through the
``kubelet`` fixture of ``tests/operator``. ``hold()`` keeps new pods ``Pending`` (not started)
until ``release()``: a deterministic window for "operator restarted mid-warm-up" tests.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .access import Access
from .client import CONFIGMAPS, EVENTS, JOBS, PODS, SECRETS, ApiError, KubeClient

USER_AGENT = "modelwarmup-tests/kubelet"
MESSAGE_LIMIT = 4096  # the kubelet truncates termination messages to 4 KiB
LOG_TAIL_LINES = 80  # FallbackToLogsOnError: the last 80 lines (at most 2 KiB) of the log
LOG_TAIL_BYTES = 2048
DEFAULT_COMMANDS: Mapping[str, Sequence[str]] = {"modelwarmup": (sys.executable, "-m", "modelwarmup.cli")}
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"

Manifest = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ContainerConfigError(Exception):
    """The container cannot be started yet (a Secret or ConfigMap key is missing)."""


@dataclasses.dataclass
class PodRun:
    """One attempt of one Job, as the kubelet ran it."""

    namespace: str
    job: str
    pod: str
    attempt: int
    argv: list[str]
    env_names: list[str]  # names only: values may hold secrets
    log_path: Path
    exit_code: int | None = None
    message: str = ""
    started: float = 0.0
    seconds: float = 0.0
    init_failed: str = ""  # the init container that failed the pod, if one did

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclasses.dataclass
class _Tracked:
    uid: str
    namespace: str
    name: str
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    process: subprocess.Popen[bytes] | None = None


@dataclasses.dataclass
class ContainerConfig:
    """How a container runs on this host: argv, environment, where its termination message goes."""

    argv: list[str]
    env: dict[str, str]
    message_path: Path
    cwd: Path


@dataclasses.dataclass
class Sandbox:
    """One pod's footprint on the host: its folder, its volumes mapped to host folders.

    A PersistentVolumeClaim maps to ``claims_root/<namespace>/<claim>`` (shared by every pod
    naming it), an emptyDir to ``home/volumes/<name>`` (the pod's own). Used by the kubelet for
    Job pods and by tests that start a Deployment's pod template (init containers included).
    """

    client: KubeClient
    namespace: str
    pod_name: str
    pod_spec: Manifest
    home: Path
    claims_root: Path
    default_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    commands: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_COMMANDS))

    def claim_dir(self, claim: str) -> Path:
        return self.claims_root / self.namespace / claim

    def volumes(self) -> dict[str, Path]:
        volumes: dict[str, Path] = {}
        for volume in self.pod_spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                volumes[volume["name"]] = self.claim_dir(volume["persistentVolumeClaim"]["claimName"])
            elif "emptyDir" in volume:
                volumes[volume["name"]] = self.home / "volumes" / volume["name"]
            else:
                raise NotImplementedError(
                    f"volume {volume['name']}: only persistentVolumeClaim and emptyDir are emulated"
                )
        return volumes

    def mounts(self, container: Manifest) -> list[tuple[str, Path]]:
        """(mount path, host path) of a container's volume mounts, subPath applied, longest first."""
        volumes = self.volumes()
        mounts: list[tuple[str, Path]] = []
        for mount in container.get("volumeMounts") or []:
            host = volumes[mount["name"]] / mount.get("subPath", "")
            host.mkdir(parents=True, exist_ok=True)
            mounts.append((mount["mountPath"].rstrip("/") or "/", host))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        return mounts

    def config(self, container: Manifest) -> ContainerConfig:
        """argv and environment of ``container``, paths rewritten to the host.

        Raises ContainerConfigError while a referenced Secret or ConfigMap key is missing.
        """
        home = self.home / "containers" / container["name"]
        for sub in ("work", "home"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        message_path = home / "termination-log"
        mounts = self.mounts(container)
        mounts.append((container.get("terminationMessagePath") or "/dev/termination-log", message_path))

        def host_path(value: str) -> str:
            for mount_path, host in mounts:
                if value == mount_path or value.startswith(mount_path + "/"):
                    return str(host) + value[len(mount_path) :]
            return value

        tmp = next((host for path, host in mounts if path == "/tmp"), home / "tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        env = base_env(home=home / "home", tmp=tmp, hostname=self.pod_name)
        for var in container.get("env") or []:
            env[var["name"]] = host_path(self._env_value(var))
        for name, value in self.default_env.items():
            env.setdefault(name, value)
        command = [*(container.get("command") or []), *(container.get("args") or [])]
        argv = (
            [*self.commands.get(command[0], command[:1]), *(host_path(arg) for arg in command[1:])]
            if command
            else []
        )
        return ContainerConfig(argv=argv, env=env, message_path=message_path, cwd=home / "work")

    def _env_value(self, var: Manifest) -> str:
        if "valueFrom" not in var:
            return str(var.get("value", ""))
        source = var["valueFrom"]
        if "fieldRef" in source:
            fields = {"metadata.name": self.pod_name, "metadata.namespace": self.namespace}
            return fields.get(source["fieldRef"]["fieldPath"], "")
        for kind, res in (("secretKeyRef", SECRETS), ("configMapKeyRef", CONFIGMAPS)):
            if kind not in source:
                continue
            ref = source[kind]
            obj = self.client.get_or_none(res, ref["name"], namespace=self.namespace)
            value = _key_of(obj, ref["key"], decode=kind == "secretKeyRef")
            if value is None:
                if ref.get("optional"):
                    return ""
                what = "secret" if kind == "secretKeyRef" else "configmap"
                missing = (
                    f'{what} "{ref["name"]}" not found'
                    if obj is None
                    else f"couldn't find key {ref['key']} in {what} {self.namespace}/{ref['name']}"
                )
                raise ContainerConfigError(missing)
            return value
        raise NotImplementedError(f"env {var['name']}: valueFrom {sorted(source)} is not emulated")


class LocalKubelet:
    """The Job controller and a kubelet for the Jobs on one API server; see the module docstring."""

    def __init__(
        self,
        access: Access,
        *,
        root: Path,
        default_env: Mapping[str, str] | None = None,
        commands: Mapping[str, Sequence[str]] = DEFAULT_COMMANDS,
        parallel: int = 1,
        pod_timeout: float = 300.0,
        backoff_seconds: float = 0.2,
        failed_create_retry_seconds: float = 0.5,
        namespace: str | None = None,
        watch_timeout: float = 1.0,
    ) -> None:
        self.client = KubeClient(access, user_agent=USER_AGENT)
        self.root = Path(root)
        self.default_env = dict(default_env or {})
        self.commands = dict(commands)
        self.pod_timeout = pod_timeout
        self.backoff_seconds = backoff_seconds
        self.failed_create_retry_seconds = failed_create_retry_seconds
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self.runs: list[PodRun] = []
        self.errors: list[BaseException] = []
        self._parallel = parallel
        self._tracked: dict[str, _Tracked] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._released = threading.Event()
        self._released.set()
        self._exempt: dict[str, str] | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._futures: list[concurrent.futures.Future[None]] = []

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LocalKubelet:
        if self._thread is not None:
            raise RuntimeError("The kubelet is already running.")
        self.root.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        self._pool = concurrent.futures.ThreadPoolExecutor(self._parallel, thread_name_prefix="kubelet-pod")
        self._thread = threading.Thread(target=self._watch_loop, name="kubelet-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop watching, kill running containers, wait for the workers (bounded)."""
        self._stopping.set()
        self._released.set()
        with self._lock:
            tracked = list(self._tracked.values())
        for job in tracked:
            job.cancelled.set()
            _kill(job.process)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            concurrent.futures.wait(self._futures, timeout=timeout)
            self._pool = None

    def __enter__(self) -> LocalKubelet:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def hold(self, exempt: Mapping[str, str] | None = None) -> None:
        """Keep new pods Pending (created, not started) until :meth:`release`; pods whose labels
        include all of ``exempt`` run meanwhile (e.g. the operator's resolve Jobs)."""
        self._exempt = dict(exempt) if exempt else None
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    # ---- what tests look at ---------------------------------------------------------------------

    def claim_dir(self, namespace: str, claim: str) -> Path:
        """The host folder standing in for a PersistentVolumeClaim (see :class:`Sandbox`)."""
        return self.root / "claims" / namespace / claim

    def runs_of(self, job: str) -> list[PodRun]:
        with self._lock:
            return [run for run in self.runs if run.job == job]

    def idle(self) -> bool:
        """No Job being worked on."""
        with self._lock:
            return not self._tracked

    # ---- the Job controller ---------------------------------------------------------------------

    def _watch_loop(self) -> None:
        version: str | None = None
        while not self._stopping.is_set():
            try:
                if version is None:
                    listing = self.client.list_raw(JOBS, namespace=self.namespace)
                    version = listing["metadata"]["resourceVersion"]
                    for job in listing["items"]:
                        self._consider(job)
                for event in self.client.watch(
                    JOBS,
                    namespace=self.namespace,
                    resource_version=version,
                    timeout_seconds=self.watch_timeout,
                ):
                    if event["type"] == "ERROR":  # 410 Gone and the like: list again
                        version = None
                        break
                    obj = event["object"]
                    version = obj["metadata"].get("resourceVersion", version)
                    if event["type"] == "DELETED":
                        self._forget(obj)
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        self._consider(obj)
                    if self._stopping.is_set():
                        return
            except (OSError, ApiError, ValueError) as error:
                if self._stopping.is_set():
                    return
                self.errors.append(error)
                version = None
                self._stopping.wait(0.2)

    def _consider(self, job: Manifest) -> None:
        meta = job["metadata"]
        if meta.get("deletionTimestamp") or _finished(job) or (job.get("spec") or {}).get("suspend"):
            return
        with self._lock:
            if meta["uid"] in self._tracked or self._stopping.is_set() or self._pool is None:
                return
            tracked = _Tracked(uid=meta["uid"], namespace=meta["namespace"], name=meta["name"])
            self._tracked[meta["uid"]] = tracked
            self._futures.append(self._pool.submit(self._run_job, tracked, job))

    def _forget(self, job: Manifest) -> None:
        with self._lock:
            tracked = self._tracked.get(job["metadata"]["uid"])
        if tracked is not None:
            tracked.cancelled.set()
            _kill(tracked.process)

    def _run_job(self, tracked: _Tracked, job: Manifest) -> None:
        try:
            self._drive(tracked, job)
        except BaseException as error:
            if not (tracked.cancelled.is_set() or self._stopping.is_set()):
                self.errors.append(error)
        finally:
            with self._lock:
                self._tracked.pop(tracked.uid, None)

    def _drive(self, tracked: _Tracked, job: Manifest) -> None:
        spec = job.get("spec") or {}
        status = dict(job.get("status") or {})
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline_s = spec.get("activeDeadlineSeconds")
        failed, succeeded = int(status.get("failed") or 0), int(status.get("succeeded") or 0)
        started_at = status.get("startTime") or now_rfc3339()
        started = time.monotonic()
        status.update(startTime=started_at, active=0, ready=0, failed=failed, succeeded=succeeded)
        attempt = failed
        while not (tracked.cancelled.is_set() or self._stopping.is_set()):
            attempt += 1
            pod = self._create_pod_until_admitted(tracked, job, attempt, status)
            if pod is None:  # cancelled or stopped while the API server refused the pod
                return
            self._patch_job(tracked, {**status, "active": 1})
            remaining = None if deadline_s is None else float(deadline_s) - (time.monotonic() - started)
            run = self._run_pod(tracked, pod, attempt, remaining)
            if run is None:  # cancelled or stopped while pending or running
                return
            if run.exit_code is None:  # the Job's activeDeadlineSeconds passed
                self._finish(
                    tracked,
                    status,
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    failed=failed + 1,
                )
                return
            if run.exit_code == 0:
                self._finish(
                    tracked,
                    status,
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    succeeded=succeeded + 1,
                    failed=failed,
                )
                return
            action, index = _failure_action(spec.get("podFailurePolicy"), pod, run.exit_code)
            if action == "FailJob":
                container = pod["spec"]["containers"][0]["name"]
                why = (
                    f"Container {container} for pod {tracked.namespace}/{pod['metadata']['name']} failed with exit code "
                    f"{run.exit_code} matching FailJob rule at index {index}"
                )
                self._finish(tracked, status, "Failed", "PodFailurePolicy", why, failed=failed + 1)
                return
            if action != "Ignore":
                failed += 1
            if failed > backoff_limit:
                self._finish(
                    tracked,
                    status,
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    failed=failed,
                )
                return
            status.update(active=0, failed=failed)
            self._patch_job(tracked, status)
            if self._stopping.wait(self.backoff_seconds):
                return

    def _finish(
        self, tracked: _Tracked, status: Manifest, outcome: str, reason: str, message: str, **counts: int
    ) -> None:
        at = now_rfc3339()

        def condition(type_: str) -> Manifest:
            return {
                "type": type_,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": at,
                "lastTransitionTime": at,
            }

        if outcome == "Complete":
            conditions = [condition("SuccessCriteriaMet"), condition("Complete")]
            extra = {"completionTime": at}
        else:
            conditions = [condition("FailureTarget"), condition("Failed")]
            extra = {}
        self._patch_job(
            tracked, {**status, **counts, **extra, "active": 0, "ready": 0, "conditions": conditions}
        )

    def _patch_job(self, tracked: _Tracked, status: Manifest) -> None:
        if tracked.cancelled.is_set():
            return
        try:
            self.client.patch_status(JOBS, tracked.name, status, namespace=tracked.namespace)
        except ApiError as error:
            if error.status != 404:
                raise
            tracked.cancelled.set()

    def _create_pod_until_admitted(
        self, tracked: _Tracked, job: Manifest, attempt: int, status: Manifest
    ) -> Manifest | None:
        """Create the attempt's pod; while the API server refuses it (a ServiceAccount that does not
        exist, a quota), do as the Job controller does: a ``FailedCreate`` Warning Event on the Job
        (one, its count bumped on repeats), ``active`` stays 0, and retry until it is admitted."""
        event: Manifest | None = None
        while not (tracked.cancelled.is_set() or self._stopping.is_set()):
            try:
                return self._create_pod(job, attempt)
            except ApiError as error:
                if error.status not in (400, 403, 422):
                    raise
                if event is None:
                    self._patch_job(tracked, {**status, "active": 0})
                    event = self._post_failed_create(job, f"Error creating: {error.message}")
                else:
                    with contextlib.suppress(ApiError):
                        event = self.client.patch(
                            EVENTS,
                            event["metadata"]["name"],
                            {"count": int(event.get("count") or 1) + 1, "lastTimestamp": now_rfc3339()},
                            namespace=event["metadata"]["namespace"],
                        )
            if self._stopping.wait(self.failed_create_retry_seconds):
                return None
        return None

    def _post_failed_create(self, job: Manifest, message: str) -> Manifest:
        meta, at = job["metadata"], now_rfc3339()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": "Warning",
            "reason": "FailedCreate",
            "message": message,
            "source": {"component": "job-controller"},
            "count": 1,
            "firstTimestamp": at,
            "lastTimestamp": at,
        }
        return self.client.create(EVENTS, body, namespace=meta["namespace"])

    def _create_pod(self, job: Manifest, attempt: int) -> Manifest:
        meta = job["metadata"]
        template = job["spec"]["template"]
        name = f"{meta['name'][:57]}-{''.join(random.choices(_NAME_CHARS, k=5))}"
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            "job-name": meta["name"],
            "batch.kubernetes.io/job-name": meta["name"],
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
        }
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [owner],
            },
            "spec": template["spec"],
        }
        pod = self.client.create(PODS, body, namespace=meta["namespace"])
        self._pod_status(
            pod, {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
        )
        return pod

    def _pod_status(self, pod: Manifest, status: Manifest) -> None:
        with contextlib.suppress(ApiError):  # gone with its Job: nothing to report to
            self.client.patch_status(
                PODS, pod["metadata"]["name"], status, namespace=pod["metadata"]["namespace"]
            )

    # ---- the kubelet ----------------------------------------------------------------------------

    def _run_pod(
        self, tracked: _Tracked, pod: Manifest, attempt: int, remaining: float | None
    ) -> PodRun | None:
        """Start the pod's container once it may start; its run (exit_code None: deadline), or None."""
        namespace, pod_name = tracked.namespace, pod["metadata"]["name"]
        containers = pod["spec"]["containers"]
        if len(containers) != 1:
            raise NotImplementedError(f"pod {pod_name}: {len(containers)} containers; only one is run")
        container = containers[0]
        began = time.monotonic()
        sandbox = Sandbox(
            client=self.client,
            namespace=namespace,
            pod_name=pod_name,
            pod_spec=pod["spec"],
            home=self.root / "pods" / namespace / pod_name,
            claims_root=self.root / "claims",
            default_env=self.default_env,
            commands=self.commands,
        )
        log_path = sandbox.home / "log"

        def out_of_time() -> bool:
            return remaining is not None and time.monotonic() - began > remaining

        labels = pod["metadata"].get("labels") or {}
        exempt = self._exempt is not None and all(labels.get(k) == v for k, v in self._exempt.items())
        while not exempt and not self._released.wait(0.05):  # hold(): the pod stays Pending
            if tracked.cancelled.is_set() or self._stopping.is_set():
                return None
        while True:  # a missing Secret keeps the pod Pending, as on a real node
            if tracked.cancelled.is_set() or self._stopping.is_set():
                return None
            try:
                config = sandbox.config(container)
                break
            except ContainerConfigError as error:
                self._pod_status(pod, _waiting(container["name"], "CreateContainerConfigError", str(error)))
                if out_of_time():
                    return PodRun(namespace, tracked.name, pod_name, attempt, [], [], log_path)
                self._stopping.wait(0.5)
        if not config.argv:
            raise NotImplementedError("a container without command: images are not emulated")
        started_at = now_rfc3339()
        self._pod_status(
            pod, _pod_phase("Running", container, {"running": {"startedAt": started_at}}, ready=True)
        )
        run = PodRun(
            namespace,
            tracked.name,
            pod_name,
            attempt,
            config.argv,
            sorted(config.env),
            log_path,
            started=time.monotonic(),
        )
        with self._lock:
            self.runs.append(run)
        timeout = (
            self.pod_timeout
            if remaining is None
            else max(0.0, min(self.pod_timeout, remaining - (time.monotonic() - began)))
        )
        exit_code = self._init_containers(tracked, sandbox, pod, timeout)
        if exit_code == 0:
            exit_code = self._execute(tracked, config, log_path, timeout)
        else:
            config = sandbox.config(
                next(i for i in pod["spec"]["initContainers"] if i["name"] == run.init_failed)
            )
        run.seconds = round(time.monotonic() - run.started, 3)
        if tracked.cancelled.is_set() or self._stopping.is_set():
            return None
        run.exit_code = exit_code
        run.message = _termination_message(config.message_path, run.log_path, exit_code, container)
        terminated: Manifest = {
            "exitCode": 137 if exit_code is None else exit_code,
            "reason": "Completed"
            if exit_code == 0
            else ("DeadlineExceeded" if exit_code is None else "Error"),
            "startedAt": started_at,
            "finishedAt": now_rfc3339(),
        }
        if run.message:
            terminated["message"] = run.message
        self._pod_status(
            pod,
            _pod_phase(
                "Succeeded" if exit_code == 0 else "Failed",
                container,
                {"terminated": terminated},
                ready=False,
            ),
        )
        return run

    def _init_containers(
        self, tracked: _Tracked, sandbox: Sandbox, pod: Manifest, timeout: float
    ) -> int | None:
        """Run the pod's init containers in order (their logs beside the pod's); the first
        non-zero exit code stops there and fails the pod, as on a node with restartPolicy Never."""
        for init in pod["spec"].get("initContainers") or []:
            config = sandbox.config(init)
            code = self._execute(tracked, config, sandbox.home / f"init-{init['name']}.log", timeout)
            if code != 0:
                run = next(r for r in self.runs if r.pod == pod["metadata"]["name"])
                run.init_failed = init["name"]
                run.log_path = sandbox.home / f"init-{init['name']}.log"
                return code
        return 0

    def _execute(
        self, tracked: _Tracked, config: ContainerConfig, log_path: Path, timeout: float
    ) -> int | None:
        """Run the container; its exit code, or None when killed for the deadline."""
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                config.argv,
                env=config.env,
                cwd=config.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            tracked.process = process
            try:
                return process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
            finally:
                _kill(process)
                tracked.process = None


def image_id(image: str) -> str:
    """What a node reports as a started container's ``imageID``: the pulled image by digest. Images
    are not emulated, so the digest here is the sha256 of the reference (same tag, same digest)."""
    name = image.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:  # a tag, not a registry's port
        name = name[: name.rfind(":")]
    return f"{name}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


def _pod_phase(phase: str, container: Manifest, state: Manifest, *, ready: bool) -> Manifest:
    started = "running" in state or "terminated" in state  # the image was pulled
    return {
        "phase": phase,
        **({"startTime": state["running"]["startedAt"]} if "running" in state else {}),
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": str(ready)}],
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                **({"imageID": image_id(container.get("image", ""))} if started else {}),
                "ready": ready,
                "restartCount": 0,
                "started": ready,
                "state": state,
            }
        ],
    }


def base_env(*, home: Path, tmp: Path, hostname: str) -> dict[str, str]:
    """What every container gets before its own ``env``: no more of the host's environment."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "HOSTNAME": hostname,
    }


def _key_of(obj: Manifest | None, key: str, *, decode: bool) -> str | None:
    if obj is None:
        return None
    if key in (obj.get("data") or {}):
        value = obj["data"][key]
        return base64.b64decode(value).decode() if decode else str(value)
    # stringData is write-only on a real server (merged into data); the emulator keeps it as sent.
    if key in (obj.get("stringData") or {}):
        return str(obj["stringData"][key])
    return None


def _finished(job: Manifest) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _failure_action(policy: Manifest | None, pod: Manifest, exit_code: int) -> tuple[str, int | None]:
    """The podFailurePolicy action for a failed pod ("Count" when no rule matches)."""
    container = pod["spec"]["containers"][0]["name"]
    for index, rule in enumerate((policy or {}).get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if not on_codes or on_codes.get("containerName", container) != container:
            continue  # onPodConditions rules: no pod here gets a DisruptionTarget condition
        listed = exit_code in on_codes.get("values", [])
        if listed == (on_codes.get("operator", "In") == "In"):
            return str(rule["action"]), index
    return "Count", None


def _termination_message(path: Path, log_path: Path, exit_code: int | None, container: Manifest) -> str:
    try:
        message = path.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
    except OSError:
        message = ""
    if (
        not message
        and exit_code != 0
        and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
    ):
        try:
            lines = log_path.read_bytes().splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            lines = []
        message = b"\n".join(lines)[-LOG_TAIL_BYTES:].decode(errors="replace")
    return message


def _waiting(container: str, reason: str, message: str) -> Manifest:
    return {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": container,
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }


def _kill(process: subprocess.Popen[bytes] | None) -> None:
    """Kill a container's whole process group (helpers it left behind too), and reap it."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, 9)  # its own session (start_new_session): pgid == pid
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
