"""
The emulated API server and the kopf runner, proven with a throwaway operator.

The first half checks the API semantics directly over HTTP (what kmock alone lacks);
the second half runs a real kopf operator against the server.
"""

from __future__ import annotations

import collections
import copy
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kmock
import kopf
import pytest

from .access import Access
from .client import (
    CRDS,
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    NAMESPACES,
    PODS,
    SERVICE_ACCOUNTS,
    ApiError,
    KubeClient,
    Res,
    wait_for,
)
from .emulator import ApiServer
from .kopf_runner import OperatorThread

GROUP, VERSION, PLURAL = "modelwarmup.dev", "v1alpha1", "modelwarmups"
MW = Res(f"{GROUP}/{VERSION}", PLURAL)
NS = "team-a"
FINALIZER = "modelwarmup.dev/cleanup"
OWNER_LABEL = "modelwarmup.dev/owner"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"kind": "ModelWarmup", "plural": PLURAL, "singular": "modelwarmup", "shortNames": ["mw"]},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "model": {"type": "string"},
                                    "deployment": {"type": "string"},
                                    "replicas": {"type": "integer", "default": 1},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def warmup(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelWarmup",
        "metadata": {"name": name},
        "spec": {"model": "tiny", **spec},
    }


def deployment(name: str) -> dict[str, Any]:
    # Valid as a real server would require it (the emulator itself does not validate).
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "server", "image": "srv:1", "env": [{"name": "A", "value": "1"}]},
                        {"name": "sidecar", "image": "side:1"},
                    ]
                },
            },
        },
    }


# ------------------------------------------------------------------------------------------------
# The API semantics, directly.
# ------------------------------------------------------------------------------------------------


def valid_job(body: dict[str, Any]) -> dict[str, Any]:
    """A Job the API server admits (GAP-ADMIT): the body given, with a pod template."""
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    return {**body, "spec": {"template": template}}


def test_crd_is_served_and_discoverable(api_server: ApiServer, kube: KubeClient) -> None:
    crd = api_server.install_crd(CRD)
    assert {c["type"] for c in crd["status"]["conditions"]} == {"NamesAccepted", "Established"}
    groups = kube.request("GET", "/apis")["groups"]
    assert any(g["name"] == GROUP for g in groups)
    listing = kube.request("GET", f"/apis/{GROUP}/{VERSION}")
    resources = {r["name"]: r for r in listing["resources"]}
    assert resources[PLURAL]["namespaced"] is True
    assert resources[PLURAL]["kind"] == "ModelWarmup"
    assert {"list", "watch", "patch"} <= set(resources[PLURAL]["verbs"])
    assert f"{PLURAL}/status" in resources
    assert kube.list(MW) == []

    kube.delete(CRDS, CRD["metadata"]["name"])
    with pytest.raises(ApiError) as err:
        kube.list(MW)
    assert err.value.status == 404


def test_a_crd_whose_cel_rule_walks_an_unbounded_map_is_refused(
    api_server: ApiServer, kube: KubeClient
) -> None:
    crd = copy.deepcopy(CRD)
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["limits"] = {
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": 8},
    }
    spec["x-kubernetes-validations"] = [
        {"rule": "self.limits.exists(k, k.endsWith('/gpu'))", "message": "gpu"}
    ]
    with pytest.raises(ApiError) as err:
        kube.create(CRDS, crd)
    assert err.value.status == 422
    assert "properties[limits], which has no maxProperties" in err.value.body["message"]
    assert err.value.body["details"]["causes"][0]["reason"] == "FieldValueForbidden"

    spec["properties"]["limits"]["maxProperties"] = 16
    assert kube.create(CRDS, crd)["metadata"]["name"] == CRD["metadata"]["name"]


def test_only_https_with_a_valid_token_is_served(api_server: ApiServer, kube: KubeClient) -> None:
    import ssl
    import urllib.error
    import urllib.request

    context = api_server.access.ssl_context()
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {api_server.access.token}"},
    ):
        request = urllib.request.Request(api_server.url + "/api/v1/namespaces/x/pods", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, context=context, timeout=5)
        assert err.value.code == 401
        assert json.loads(err.value.read())["reason"] == "Unauthorized"
    with pytest.raises(urllib.error.URLError) as refused:  # a client that does not trust the CA
        urllib.request.urlopen(api_server.url + "/api", context=ssl.create_default_context(), timeout=5)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    assert kube.list(Res("v1", "pods"), namespace="x") == []


def test_system_metadata_and_generation(api_server: ApiServer, kube: KubeClient) -> None:
    api_server.install_crd(CRD)
    obj = kube.create(MW, {**warmup("w1"), "status": {"ignored": True}, "junk": 1}, namespace=NS)
    meta = obj["metadata"]
    assert meta["namespace"] == NS
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert "status" not in obj  # a status subresource: status is not taken on create
    assert "junk" not in obj  # pruned by the structural schema
    assert obj["spec"]["replicas"] == 1  # defaulted by the structural schema
    rv1 = int(meta["resourceVersion"])

    spec_changed = kube.patch(MW, "w1", {"spec": {"model": "other"}}, namespace=NS)
    assert spec_changed["metadata"]["generation"] == 2
    assert int(spec_changed["metadata"]["resourceVersion"]) > rv1

    status_changed = kube.patch_status(MW, "w1", {"phase": "Ready"}, namespace=NS)
    assert status_changed["metadata"]["generation"] == 2
    assert status_changed["status"] == {"phase": "Ready"}
    assert int(status_changed["metadata"]["resourceVersion"]) > int(
        spec_changed["metadata"]["resourceVersion"]
    )

    # /status writes only status; the main endpoint ignores status.
    via_status = kube.patch(
        MW, "w1", {"spec": {"model": "x"}, "status": {"phase": "A"}}, namespace=NS, subresource="status"
    )
    assert via_status["spec"]["model"] == "other" and via_status["status"]["phase"] == "A"
    via_main = kube.patch(MW, "w1", {"status": {"phase": "B"}}, namespace=NS)
    assert via_main["status"]["phase"] == "A"

    # A no-op write is not a write.
    noop = kube.patch(MW, "w1", {"spec": {"model": "other"}}, namespace=NS)
    assert noop["metadata"]["resourceVersion"] == via_main["metadata"]["resourceVersion"]

    # Clients cannot change the system fields.
    forged = kube.patch(MW, "w1", {"metadata": {"uid": "forged", "generation": 99}}, namespace=NS)
    assert forged["metadata"]["uid"] == meta["uid"] and forged["metadata"]["generation"] == 2


def test_patch_formats_and_concurrency(api_server: ApiServer, kube: KubeClient) -> None:
    api_server.install_crd(CRD)
    obj = kube.create(MW, warmup("w1"), namespace=NS)
    rv = obj["metadata"]["resourceVersion"]

    # JSON patch with a resourceVersion test (kopf's finalizer patch): ok, then stale -> 422.
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
    ]
    patched = kube.patch(MW, "w1", ops, namespace=NS, patch_type="json")
    assert patched["metadata"]["finalizers"] == [FINALIZER]
    with pytest.raises(ApiError) as err:
        kube.patch(MW, "w1", ops, namespace=NS, patch_type="json")
    assert err.value.status == 422

    # A stale resourceVersion in a merge patch is a conflict.
    with pytest.raises(ApiError) as err:
        kube.patch(MW, "w1", {"metadata": {"resourceVersion": rv}, "spec": {"model": "m"}}, namespace=NS)
    assert err.value.status == 409

    # Strategic merge patch: not for custom resources; merges containers by name for built-ins.
    with pytest.raises(ApiError) as err:
        kube.patch(MW, "w1", {"spec": {"model": "m"}}, namespace=NS, patch_type="strategic")
    assert err.value.status == 415
    kube.create(DEPLOYMENTS, deployment("srv"), namespace=NS)
    smp = kube.patch(
        DEPLOYMENTS,
        "srv",
        {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "srv:2"}]}}}},
        namespace=NS,
        patch_type="strategic",
    )
    containers = smp["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("server", "srv:2"), ("sidecar", "side:1")]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}]

    # JSON merge patch (RFC 7386): lists are replaced as a whole, null deletes.
    merged = kube.patch(
        DEPLOYMENTS,
        "srv",
        {
            "spec": {
                "replicas": None,
                "template": {"spec": {"containers": [{"name": "server", "image": "srv:3"}]}},
            }
        },
        namespace=NS,
    )
    assert merged["spec"]["template"]["spec"]["containers"] == [{"name": "server", "image": "srv:3"}]
    assert "replicas" not in merged["spec"]

    # Server-side apply (approximated): creates, then merges.
    applied = kube.patch(
        JOBS,
        "applied",
        valid_job({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "applied"}}),
        namespace=NS,
        patch_type="apply",
    )
    assert applied["metadata"]["uid"] and applied["spec"] == valid_job({})["spec"]


def test_watch_resumes_without_losing_events(api_server: ApiServer, kube: KubeClient) -> None:
    kube.create(JOBS, valid_job({"metadata": {"name": "before", "labels": {"app": "x"}}}), namespace=NS)
    listed = kube.list_raw(JOBS, namespace=NS)
    list_rv = listed["metadata"]["resourceVersion"]

    # Changes between the list and the watch are replayed from the list's resourceVersion.
    kube.create(JOBS, valid_job({"metadata": {"name": "after", "labels": {"app": "x"}}}), namespace=NS)
    kube.patch(JOBS, "before", {"metadata": {"labels": {"app": "y"}}}, namespace=NS)
    kube.delete(JOBS, "after", namespace=NS, propagation_policy="Background")
    events = list(kube.watch(JOBS, namespace=NS, resource_version=list_rv, timeout_seconds=0.2))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"),
        ("MODIFIED", "before"),
        ("DELETED", "after"),
    ]

    # With a label selector, leaving the selection is reported as DELETED.
    selected = list(
        kube.watch(JOBS, namespace=NS, resource_version=list_rv, timeout_seconds=0.2, label_selector="app=x")
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in selected] == [
        ("ADDED", "after"),
        ("DELETED", "before"),
        ("DELETED", "after"),
    ]
    assert [j["metadata"]["name"] for j in kube.list(JOBS, label_selector="app=y")] == ["before"]
    assert kube.list(JOBS, label_selector="app in (x, z)") == []

    # Without a resourceVersion: the current state as ADDED; with initial events: a bookmark.
    initial = list(kube.watch(JOBS, namespace=NS, timeout_seconds=0.2, send_initial_events=True))
    assert [e["type"] for e in initial] == ["ADDED", "BOOKMARK"]
    assert initial[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_too_old_resource_version_is_gone() -> None:
    with ApiServer(watch_cache_size=2) as server:
        kube = server.client()
        for i in range(4):
            kube.create(JOBS, valid_job({"metadata": {"name": f"j{i}"}}), namespace=NS)
        events = list(kube.watch(JOBS, resource_version="1", timeout_seconds=0.2))
        assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


def test_deletion_finalizers_and_garbage_collection(api_server: ApiServer, kube: KubeClient) -> None:
    api_server.install_crd(CRD)
    owner = kube.create(
        MW, {**warmup("owner"), "metadata": {"name": "owner", "finalizers": [FINALIZER]}}, namespace=NS
    )
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    kube.create(JOBS, valid_job({"metadata": {"name": "dep", "ownerReferences": [ref]}}), namespace=NS)

    deleting = kube.delete(MW, "owner", namespace=NS)
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == 2
    with pytest.raises(ApiError) as err:  # no new finalizers on a deleting object
        kube.patch(MW, "owner", {"metadata": {"finalizers": [FINALIZER, "other"]}}, namespace=NS)
    assert err.value.status == 422
    assert kube.get_or_none(JOBS, "dep", namespace=NS) is not None  # the owner still exists

    kube.patch(MW, "owner", {"metadata": {"finalizers": None}}, namespace=NS)
    assert kube.get_or_none(MW, "owner", namespace=NS) is None
    wait_for(lambda: kube.get_or_none(JOBS, "dep", namespace=NS) is None, timeout=2)

    # A dependent of a nonexistent owner (a wrong uid) is garbage too.
    kube.create(
        JOBS,
        valid_job({"metadata": {"name": "orphan", "ownerReferences": [{**ref, "uid": "no-such-uid"}]}}),
        namespace=NS,
    )
    wait_for(lambda: kube.get_or_none(JOBS, "orphan", namespace=NS) is None, timeout=2)

    # batch/v1 Jobs orphan their dependents by default; Background deletes them.
    job = kube.create(JOBS, valid_job({"metadata": {"name": "job"}}), namespace=NS)
    pod_ref = {"apiVersion": "batch/v1", "kind": "Job", "name": "job", "uid": job["metadata"]["uid"]}
    kube.create(Res("v1", "pods"), {"metadata": {"name": "pod", "ownerReferences": [pod_ref]}}, namespace=NS)
    kube.delete(JOBS, "job", namespace=NS)
    pod = kube.get(Res("v1", "pods"), "pod", namespace=NS)
    assert "ownerReferences" not in pod["metadata"]

    # Namespaces are a cluster-scoped resource (kmock cannot even list them).
    assert NS in [ns["metadata"]["name"] for ns in kube.list(NAMESPACES)]
    kube.delete(NAMESPACES, NS)
    wait_for(lambda: kube.get_or_none(NAMESPACES, NS) is None, timeout=2)
    assert kube.list(Res("v1", "pods"), namespace=NS) == []


def test_official_kubernetes_client(api_server: ApiServer, kube: KubeClient) -> None:
    # The kubernetes package reads no config at import; it loads the server's kubeconfig (TLS, token).
    import kubernetes.client as k8s
    import kubernetes.config

    api_server.install_crd(CRD)
    kube.create(DEPLOYMENTS, deployment("srv"), namespace=NS)
    configuration = k8s.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(api_server.kubeconfig()), client_configuration=configuration
    )
    with k8s.ApiClient(configuration) as api:
        batch, apps, custom = k8s.BatchV1Api(api), k8s.AppsV1Api(api), k8s.CustomObjectsApi(api)
        job_body: Any = {  # plain dicts are accepted as well as the V1Job models
            "metadata": {"name": "j", "labels": {"a": "b"}},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
                }
            },
        }
        job = batch.create_namespaced_job(NS, job_body)
        assert job.metadata.uid and job.metadata.namespace == NS
        assert [j.metadata.name for j in batch.list_namespaced_job(NS, label_selector="a=b").items] == ["j"]
        # A dict body goes as a strategic merge patch: the other container survives.
        deployment_ = apps.patch_namespaced_deployment(
            "srv",
            NS,
            {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "srv:9"}]}}}},
        )
        assert [c.image for c in deployment_.spec.template.spec.containers] == ["srv:9", "side:1"]
        custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, warmup("w1"))
        patched: Any = custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, PLURAL, "w1", {"status": {"phase": "Ready"}}
        )
        assert patched["status"] == {"phase": "Ready"}
        batch.delete_namespaced_job("j", NS, propagation_policy="Background")
        with pytest.raises(k8s.ApiException) as err:
            batch.read_namespaced_job("j", NS)
        assert err.value.status == 404


def test_request_log_and_fault_injection(api_server: ApiServer, kube: KubeClient) -> None:
    mark = api_server.mark()
    kube.create(JOBS, valid_job({"metadata": {"name": "j"}}), namespace=NS)
    api_server.call(lambda em: em["patch", kmock.resource("batch/v1/jobs")] << 503)
    with pytest.raises(ApiError) as err:
        kube.patch(JOBS, "j", {"spec": {"x": 1}}, namespace=NS)
    assert err.value.status == 503
    assert "x" not in kube.get(JOBS, "j", namespace=NS)["spec"]  # an injected error changes nothing
    log = api_server.requests(mark, user_agent="modelwarmup-tests")
    assert [(r.method, r.resource, r.status) for r in log] == [
        ("POST", "batch/v1/jobs", 201),
        ("PATCH", "batch/v1/jobs", 503),
        ("GET", "batch/v1/jobs", 200),
    ]


# ------------------------------------------------------------------------------------------------
# A throwaway kopf operator against the server.
# ------------------------------------------------------------------------------------------------


class Calls:
    """What the operator's handlers did, thread-safely (handlers run in kopf's executor)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()
        self.gate = threading.Event()  # the 2nd create handler fails until this is set
        self.gate.set()

    def hit(self, key: str) -> int:
        with self.lock:
            self.counts[key] += 1
            return self.counts[key]


def make_operator(access: Access, calls: Calls) -> Callable[[kopf.OperatorRegistry], None]:
    """A tiny ModelWarmup operator: Job + status + Events + a Deployment annotation."""
    kube = KubeClient(access, user_agent="test-operator/1.0")

    def register(registry: kopf.OperatorRegistry) -> None:
        @kopf.on.create(GROUP, VERSION, PLURAL, id="job", registry=registry)
        def create_job(
            body: kopf.Body, name: str, namespace: str, uid: str, patch: kopf.Patch, **_: Any
        ) -> None:
            calls.hit("create_job")
            job: dict[str, Any] = {
                "metadata": {
                    "name": f"{name}-warm",
                    "labels": {OWNER_LABEL: name},
                    "ownerReferences": [
                        {
                            "apiVersion": body["apiVersion"],
                            "kind": body["kind"],
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{"name": "warm", "image": "warmer:1"}],
                        }
                    }
                },
            }
            try:
                kube.create(JOBS, job, namespace=namespace)
            except ApiError as e:
                if e.status != 409:
                    raise
            patch.status["phase"] = "Warming"
            patch.status["job"] = job["metadata"]["name"]
            # An explicit k8s Event (kopf 1.45 posts logger messages only with posting.loggers).
            kopf.info(body, reason="JobCreated", message=f"Created job {name}-warm")

        @kopf.on.create(GROUP, VERSION, PLURAL, id="deployment", registry=registry)
        def annotate_deployment(spec: kopf.Spec, name: str, namespace: str, **_: Any) -> None:
            attempt = calls.hit("annotate_deployment")
            if not calls.gate.is_set():
                raise kopf.TemporaryError(f"not yet (attempt {attempt})", delay=0.3)
            kube.patch(
                DEPLOYMENTS,
                spec["deployment"],
                {"spec": {"template": {"metadata": {"annotations": {"modelwarmup.dev/warmed": name}}}}},
                namespace=namespace,
                patch_type="merge",
            )

        @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
        def resumed(**_: Any) -> None:
            calls.hit("resume")

        @kopf.on.event("batch", "v1", "jobs", labels={OWNER_LABEL: kopf.PRESENT}, registry=registry)
        def job_event(event: kopf.RawEvent, body: kopf.Body, namespace: str, **_: Any) -> None:
            status = body.get("status", {})
            if event["type"] is None or not status.get("succeeded"):
                return
            calls.hit("job_succeeded")
            owner = body["metadata"]["labels"][OWNER_LABEL]
            kube.patch_status(MW, owner, {"phase": "Ready"}, namespace=namespace)

        @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
        def cleanup(body: kopf.Body, **_: Any) -> None:
            calls.hit("delete")
            kopf.info(body, reason="Cleanup", message="cleaned up")

    return register


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    # Server-side filtering of the Job watch (checks the emulator's label selectors).
    settings.watching.label_selectors["batch", "v1", "jobs"] = OWNER_LABEL


@pytest.fixture
def operator_world(api_server: ApiServer, kube: KubeClient) -> Calls:
    api_server.install_crd(CRD)
    kube.create(DEPLOYMENTS, deployment("srv"), namespace=NS)
    return Calls()


def start_operator(
    api_server: ApiServer, run_operator: Callable[..., OperatorThread], calls: Calls
) -> OperatorThread:
    return run_operator(make_operator(api_server.access, calls), configure=configure, watching=(MW, JOBS))


def test_operator_full_lifecycle(
    api_server: ApiServer,
    kube: KubeClient,
    run_operator: Callable[..., OperatorThread],
    operator_world: Calls,
) -> None:
    calls = operator_world
    start_operator(api_server, run_operator, calls)
    kube.create(MW, warmup("w1", deployment="srv"), namespace=NS)

    # Creation: kopf's finalizer (a JSON patch with a resourceVersion test), the status via
    # the status subresource, a Job owned by the CR, an Event, the Deployment merge-patched.
    obj = wait_for(
        lambda: (o := kube.get(MW, "w1", namespace=NS)).get("status", {}).get("phase") == "Warming" and o,
        timeout=10,
    )
    assert FINALIZER in obj["metadata"]["finalizers"]
    job = kube.get(JOBS, "w1-warm", namespace=NS)
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    wait_for(
        lambda: (
            kube.get(DEPLOYMENTS, "srv", namespace=NS)["spec"]["template"]
            .get("metadata", {})
            .get("annotations", {})
            .get("modelwarmup.dev/warmed")
            == "w1"
        )
    )
    containers = kube.get(DEPLOYMENTS, "srv", namespace=NS)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["server", "sidecar"]  # merge patch kept them
    wait_for(
        lambda: any(
            e["reason"] == "JobCreated"
            for e in kube.list(EVENTS, namespace=NS, field_selector="involvedObject.name=w1")
        )
    )

    # The "kubelet/job controller" finishes the Job: the operator reacts to the Job's event.
    kube.patch_status(JOBS, "w1-warm", {"succeeded": 1}, namespace=NS)
    wait_for(lambda: kube.get(MW, "w1", namespace=NS)["status"].get("phase") == "Ready")
    assert calls.counts["job_succeeded"] == 1

    # Idle: the operator makes no requests at all once the work is done.
    idle_mark = api_server.wait_quiet(0.3)
    time.sleep(1.0)
    idle = api_server.requests(idle_mark)
    assert idle == [], api_server.format_requests(idle)

    # Deletion: the delete handler runs, the finalizer goes, the CR goes, the Job is GC'd.
    kube.delete(MW, "w1", namespace=NS)
    wait_for(lambda: kube.get_or_none(MW, "w1", namespace=NS) is None, timeout=10)
    wait_for(lambda: kube.get_or_none(JOBS, "w1-warm", namespace=NS) is None, timeout=5)
    assert calls.counts["delete"] == 1
    wait_for(
        lambda: any(
            e["reason"] == "Cleanup"
            for e in kube.list(EVENTS, namespace=NS, field_selector="involvedObject.name=w1")
        )
    )
    assert calls.counts["create_job"] == 1


def test_operator_restart_resumes_mid_work(
    api_server: ApiServer,
    kube: KubeClient,
    run_operator: Callable[..., OperatorThread],
    operator_world: Calls,
) -> None:
    calls = operator_world
    calls.gate.clear()  # the deployment handler keeps failing (TemporaryError) for now
    operator = start_operator(api_server, run_operator, calls)
    kube.create(MW, warmup("w1", deployment="srv"), namespace=NS)
    wait_for(lambda: calls.counts["annotate_deployment"] >= 1 and calls.counts["create_job"])
    wait_for(lambda: kube.get(MW, "w1", namespace=NS).get("status", {}).get("phase"))

    # Restart in the middle: one create handler done, the other waiting for a retry.
    mark = api_server.mark()
    operator.stop()
    calls.gate.set()
    operator.start()
    api_server.wait_watching(MW, JOBS, since=mark)
    wait_for(
        lambda: (
            kube.get(DEPLOYMENTS, "srv", namespace=NS)["spec"]["template"]
            .get("metadata", {})
            .get("annotations", {})
            .get("modelwarmup.dev/warmed")
            == "w1"
        ),
        timeout=10,
    )
    assert calls.counts["create_job"] == 1  # the done handler is not re-run after the restart
    assert calls.counts["annotate_deployment"] >= 2

    # A restart after all is done resumes the object without re-running the creation.
    operator.restart()
    wait_for(lambda: calls.counts["resume"] >= 1, timeout=10)
    assert calls.counts["create_job"] == 1
    assert operator.runs == 3


def test_built_in_objects_are_refused_as_a_real_server_refuses_them(
    api_server: ApiServer, kube: KubeClient
) -> None:
    """GAP-ADMIT: a 422 Invalid whose details.causes name the field; a failed JSON-patch test is a
    422 without causes, which tells a conflict from a validation error."""
    bad_label = valid_job({"metadata": {"name": "j", "labels": {"app": "ends-with-dash-"}}})
    negative = valid_job({"metadata": {"name": "k"}})
    negative["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "-1"}}
    for body, field in ((bad_label, "metadata.labels"), (negative, "resources.limits[cpu]")):
        with pytest.raises(ApiError) as err:
            kube.create(JOBS, body, namespace=NS)
        assert (err.value.status, err.value.body["reason"]) == (422, "Invalid")
        assert any(field in c["field"] for c in err.value.body["details"]["causes"]), err.value.body

    kube.create(DEPLOYMENTS, deployment("srv"), namespace=NS)
    live = kube.get(DEPLOYMENTS, "srv", namespace=NS)
    mount = {"name": "data", "mountPath": "/data"}
    duplicate = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/spec/template/spec/volumes", "value": [{"name": "data", "emptyDir": {}}]},
        {"op": "add", "path": "/spec/template/spec/containers/0/volumeMounts", "value": [mount, mount]},
    ]
    with pytest.raises(ApiError) as err:
        kube.patch(DEPLOYMENTS, "srv", duplicate, namespace=NS, patch_type="json")
    [cause] = err.value.body["details"]["causes"]
    assert cause["field"].endswith("volumeMounts[1].mountPath") and "must be unique" in cause["message"]

    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}, *duplicate[1:2]]
    with pytest.raises(ApiError) as err:
        kube.patch(DEPLOYMENTS, "srv", stale, namespace=NS, patch_type="json")
    assert err.value.status == 422 and not err.value.body["details"]["causes"]


def test_pods_need_their_service_account_and_field_selectors_their_kinds_fields(
    api_server: ApiServer, kube: KubeClient
) -> None:
    """The ServiceAccount admission plugin (403) and the field selectors a kind supports (400)."""
    pod = {
        "metadata": {"name": "p"},
        "spec": {"serviceAccountName": "warmup", "containers": [{"name": "c", "image": "x"}]},
    }
    with pytest.raises(ApiError) as refused:
        kube.create(PODS, pod, namespace=NS)
    assert refused.value.status == 403
    assert 'error looking up service account team-a/warmup: serviceaccount "warmup" not found' in str(
        refused.value
    )
    kube.create(
        PODS,
        {**pod, "metadata": {"name": "q"}, "spec": {**pod["spec"], "serviceAccountName": "default"}},
        namespace=NS,
    )
    kube.create(SERVICE_ACCOUNTS, {"metadata": {"name": "warmup"}}, namespace=NS)
    kube.create(PODS, pod, namespace=NS)

    assert [
        e["metadata"]["name"] for e in kube.list(PODS, namespace=NS, field_selector="metadata.name=p")
    ] == ["p"]
    assert kube.list(EVENTS, namespace=NS, field_selector="involvedObject.kind=Job,reason=FailedCreate") == []
    with pytest.raises(ApiError) as bad:
        kube.list(PODS, namespace=NS, field_selector="spec.containers=x")
    assert bad.value.status == 400 and "field label not supported: spec.containers" in str(bad.value)


def test_pod_logs_are_plain_text_of_one_started_container_as_the_kubelet_serves_them(
    api_server: ApiServer, kube: KubeClient, tmp_path: Any
) -> None:
    """``pods/log`` through the operator's own client: the refusals of a real API server, then
    the attached file's text, cut by ``limitBytes``."""
    from modelwarmup import errors
    from modelwarmup.controller import credentials
    from modelwarmup.controller.kubeapi import KubeApi

    api = KubeApi(credentials.load(credentials.Source(kubeconfig=str(api_server.kubeconfig(namespace=NS)))))
    pod = {
        "metadata": {"name": "web"},
        "spec": {
            "initContainers": [{"name": "prepare", "image": "x"}],
            "containers": [{"name": "server", "image": "x"}, {"name": "sidecar", "image": "x"}],
        },
    }
    kube.create(PODS, pod, namespace=NS)
    log = tmp_path / "server.log"
    log.write_text("INFO starting\nINFO ready\n")
    api_server.attach_log(NS, "web", "server", log)

    def refusal(container: str, limit: int = 100) -> str:
        with pytest.raises(errors.KubeApiError) as refused:
            api.log(NS, "web", container, limit_bytes=limit)
        assert refused.value.status in (400, 404, 422), refused.value
        return str(refused.value)

    assert 'container "server" in pod "web" is waiting to start: PodInitializing' in refusal("server")
    assert "container nope is not valid for pod web" in refusal("nope")
    with pytest.raises(ApiError) as unnamed:
        kube.request("GET", f"/api/v1/namespaces/{NS}/pods/web/log")
    assert "a container name must be specified for pod web, choose one of: [server sidecar]" in str(
        unnamed.value
    )

    running = {"name": "server", "ready": True, "state": {"running": {"startedAt": "2026-12-02T10:00:00Z"}}}
    kube.patch(PODS, "web", {"status": {"containerStatuses": [running]}}, namespace=NS, subresource="status")
    assert api.log(NS, "web", "server", limit_bytes=1000) == "INFO starting\nINFO ready\n"
    assert api.log(NS, "web", "server", limit_bytes=13) == "INFO starting"
    assert "limitBytes: must be > 0" in refusal("server", limit=0)
    with pytest.raises(errors.KubeApiError) as missing:
        api.log(NS, "gone", "server", limit_bytes=10)
    assert missing.value.not_found
