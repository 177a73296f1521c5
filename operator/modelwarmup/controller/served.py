"""Did a serving pod start warm? Judged from the first lines of its logs (pure: text in, verdict out).

A compiled cache that no real server hits is worth nothing, and a miss is silent: the server
compiles again and starts slowly. So once a Deployment rolled out to a new key, the operator reads
the logs of one new ready pod (see :func:`modelwarmup.controller.observe.serving_logs`):

* our init container's verdict: ``modelwarmup verify`` (builtin wiring) or ``modelwarmup restore``
  (rehearsal wiring), either of which may have let the pod start cold with a warning;
* in rehearsal mode, the engine's own lines (:mod:`modelwarmup.rehearsal.engines`): vLLM says
  when it loaded compiled graphs from its cache, and when it compiled them;
* in builtin mode, the runtime loader's lines in the server process
  (:mod:`modelwarmup.contracts.startlog`): a cold-start warning, or torch's cache counters after
  the first compilation (which happens at the first request, not at start).

A log that shows neither a hit nor a miss yet is no verdict: it is read again later.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.status import ModelWarmupStatus
from modelwarmup.contracts import startlog
from modelwarmup.controller import rehearsal, serving
from modelwarmup.controller.kubeapi import KubeObject
from modelwarmup.rehearsal import engines

# How much of each log is read: the start of a server (vLLM logs about 30 KB up to ready).
LOG_BYTES = 256 * 1024


@dataclass(frozen=True)
class PodLogs:
    """The first lines of one serving pod's logs, or why they could not be read."""

    deployment: str
    pod: str
    model_key: str
    init: str = ""  # our init container's
    server: str = ""  # the server container's
    unreadable: str = ""  # an API error reading them (e.g. no RBAC for pods/log)
    image_id: str = ""  # the server container's image, by digest (the node's containerStatuses)


@dataclass(frozen=True)
class Verdict:
    warm: bool | None
    evidence: str


def containers(mw: ModelWarmup, template: KubeObject) -> tuple[str, str]:
    """(our init container, the server container) whose logs tell how a pod of ``template`` started."""
    spec = mw.spec.serving
    assert spec is not None
    if spec.rehearsal is not None:
        try:
            server = str(rehearsal.server_container(template, spec.rehearsal).get("name"))
        except rehearsal.TemplateProblem:
            server = ""
        return rehearsal.RESTORE_CONTAINER, server
    names = [str(c.get("name")) for c in template.get("spec", {}).get("containers") or []]
    wired = [n for n in names if not spec.containers or n in spec.containers]
    return serving.INIT_CONTAINER, wired[0] if wired else ""


def unjudged(status: ModelWarmupStatus, deployments: Iterable[str]) -> list[str]:
    """Of these Deployments (wired to the status's model key), those whose start has no verdict yet."""
    key = status.model_key
    done = {s.deployment for s in status.serving_starts if s.model_key == key and s.warm is not None}
    return [name for name in deployments if name not in done]


def judge(logs: PodLogs, *, rehearsed: bool) -> Verdict:
    """Warm, cold, or not known yet, with the lines that say so."""
    if logs.unreadable:
        return Verdict(None, f"cannot read the pod's log: {logs.unreadable}")
    for said in startlog.verdicts(logs.init):
        if "verify" in said and said["verify"] != "Match":
            return Verdict(False, f"modelwarmup verify: {said['verify']}: {said.get('message', '')}")
        if said.get("ok") is False:
            return Verdict(False, f"modelwarmup restore: {said.get('reason')}: {said.get('message', '')}")
    if warned := startlog.warnings(logs.server):
        return Verdict(False, f"the runtime loader: {warned[0]}")
    return _engine(logs.server) if rehearsed else _loader(logs.server)


def _engine(log: str) -> Verdict:
    if misses := engines.miss_evidence(log):
        line, hint = misses[0]
        return Verdict(False, f"{line} ({hint})")
    if hits := engines.hit_evidence(log):
        seconds = engines.engine_init_seconds(log)
        init = f"; engine init {seconds:.1f} s" if seconds is not None else ""
        more = f" (and {len(hits) - 1} more cache loads)" if len(hits) > 1 else ""
        return Verdict(True, f"{hits[0]}{more}{init}")
    return Verdict(
        None,
        "the server's log shows no compile-cache load nor a compilation (an engine whose log "
        "we do not read, or one that compiles nothing, as vLLM with --enforce-eager)",
    )


def _loader(log: str) -> Verdict:
    counted = startlog.compile_stats(log)
    if not counted:
        return Verdict(
            None,
            "the runtime loader has not compiled yet (it compiles at the first request), "
            "or is not in the server's process",
        )
    last = counted[-1]
    hits, misses = last.get("fxgraph_cache_hit", 0), last.get("fxgraph_cache_miss", 0)
    said = f"Inductor's cache: {hits} hits, {misses} misses"
    if misses:
        return Verdict(False, said)
    return Verdict(True, said) if hits else Verdict(None, said)
