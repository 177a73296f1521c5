"""
A Kubernetes API server for tests: kmock's emulator + the semantics every real API server has.

What comes from kmock (PyPI ``kmock``, by kopf's author), unchanged:

* the HTTP server (``kmock.Server``: aiohttp on 127.0.0.1, a random port);
* request parsing into K8s terms (resource, namespace, name, subresource, action);
* the request journal (``emulator.requests``) and the reaction DSL for fault injection,
  e.g. ``server.call(lambda em: em['patch', kmock.resource('batch/v1/jobs')] << 500)``;
* API discovery (``/api``, ``/apis``, ``/apis/{group}/{version}``) from ``emulator.resources``,
  pre-filled with kmock's bundled list of built-in resources (K3s; 71 resources);
* Kubernetes-style error rendering (``kind: Status``) of ``kmock.KubernetesError``;
* the object store with per-object history (``emulator.objects[res, ns, name].history``).

What kmock 0.8 lacks (verified against kmock's source and by requests), and how it is bridged
here. Each item names the gap and what a real API server does; the code has the same markers:

GAP-META    Objects get no ``uid``/``resourceVersion``/``generation``/``creationTimestamp``, and
            objects POSTed to a namespaced URL get no ``metadata.namespace``. Real: all are set by
            the server; resourceVersion is a cluster-wide counter bumped on every write.
GAP-NAME    ``metadata.generateName`` is ignored (the 2nd kopf event in a namespace is a 409).
            Real: the server appends 5 random characters.
GAP-RV      JSON-patch ``test`` ops on ``/metadata/resourceVersion`` fail with a 500 (no such
            field), so kopf's finalizer never lands. Real: the test passes/fails on the actual
            version, and a failed op is a 422 (kopf then retries on the next event). A stale
            ``metadata.resourceVersion`` in a merge patch or PUT is a 409 Conflict.
GAP-PATCH   Content-Type is ignored: every dict is merged (and a dict cannot replace a scalar),
            every list is JSON-patched. Real: RFC 7386 merge patch, RFC 6902 JSON patch,
            strategic merge patch (built-ins only; 415 for custom resources), and server-side
            apply (approximated here as create-or-strategic/merge-patch, no field ownership).
            PUT (replace) is not served at all (404); it is served here.
GAP-STATUS  ``/status`` is not a subresource: a PATCH to it changes anything. Real: for resources
            with a status subresource, ``/status`` writes only ``.status`` and the main endpoint
            ignores ``.status``; ``generation`` is bumped on changes outside metadata/status only.
            A no-op write does not bump resourceVersion and emits no watch event.
GAP-WATCH   A watch ignores ``resourceVersion``: it re-sends all objects as ADDED and then only
            events that happen after it connected, so events between a list and its watch (or
            between two watch connections) are lost. ``timeoutSeconds`` is ignored; there are no
            bookmarks. Real: events after the given resourceVersion are replayed from the watch
            cache (410 Gone if too old); ``sendInitialEvents`` ends with a bookmark.
GAP-SELECT  ``labelSelector``/``fieldSelector`` are ignored on lists and watches. Real: filtered
            server-side; a watched object leaving/entering the selection is DELETED/ADDED; a
            field a kind cannot select on is a 400 (here too: ``semantics.FIELD_SELECTABLE``).
GAP-DELETE  Deletion without finalizers, with finalizers (``deletionTimestamp``) and the final
            removal once finalizers are gone mostly work in kmock, but: finalizers can be added to
            a deleting object (real: 422), the generation is not bumped (real: it is), and
            DeleteOptions (preconditions, propagationPolicy) are ignored.
GAP-GC      No garbage collection. Real: dependents whose ``ownerReferences`` all point to absent
            owners are deleted in the background (Foreground/Orphan policies too); note that
            batch/v1 Jobs default to *orphaning* their dependents when deleted via the API.
GAP-CRD     A POSTed CRD is only stored: its resource is not served nor discoverable. Real: the
            CRD's versions become discoverable (with the status/scale subresources), CRs are
            pruned & defaulted by the structural schema, the CRD gets Established conditions,
            and a CRD whose CEL rules' estimated cost exceeds the budget is refused (422). The
            cost check here is :mod:`cel_budget`'s sufficient condition, not apiextensions'
            estimator: stricter (every walked list, map and string needs a bound), never looser.
GAP-AUTHN   Plain HTTP, and every request is served. Real: TLS only, and a request without valid
            credentials is a 401 before anything else. Here: HTTPS with a per-server CA and a
            bearer token or a client certificate signed by that CA (:mod:`.access`); a kubeconfig
            carries them, as for a real cluster.
GAP-NS      ``GET /api/v1/namespaces`` is a 500 and ``/api/v1/namespaces/{name}`` is read as a
            namespace scope (kmock's URL parser). Real: namespaces are a cluster-scoped resource.
            Namespaces are created on first use unless ``strict_namespaces=True`` (real: 404).

GAP-LOG     ``GET pods/{name}/log`` returns the pod object. Real: the API server proxies the
            node's kubelet for one container's plain-text log (``container``, ``limitBytes``,
            ``tailLines``), a 400 for a container the pod has not, a missing container name
            when the pod has several, or a container that has not started. Here: the same
            refusals, and the text of a file the test attaches (:meth:`ApiServer.attach_log`).

GAP-ADMIT   kmock stores any built-in object. Real: the kind's OpenAPI schema and apimachinery's
            validation refuse invalid ones with a 422 whose details.causes name the fields. Here
            (:mod:`.admission`): for Jobs, Deployments, PVCs and Events, the schema (strict) and
            the rules for names, labels, quantities, volumes and mounts, tolerations; for Pods,
            the ServiceAccount admission plugin (a 403 naming a ServiceAccount that does not
            exist; "default" always does). The schema's required fields are checked before any
            defaulting, so a field the real server would default (podFailurePolicy's
            onPodConditions status) must be sent. Not checked: the hundreds of other field
            rules, other kinds, other admission plugins and webhooks (quota, LimitRanges, Pod
            Security), immutable fields on update.

Not emulated at all (a real server has them): defaulting of built-in types, RBAC (authorization; tests check the
operator's requests against docs/rbac.md instead), managedFields/field
ownership, DELETE of collections, conversion between CRD versions (each version is stored
separately), controllers (no Pods for Jobs, no ReplicaSets for Deployments: tests play kubelet
and controllers by patching ``/status``).

Threading: :class:`ApiServer` runs the emulator in its own event loop in a background thread,
so synchronous tests, kopf (in its own thread and loop) and subprocesses can all use the URL.
All state changes run synchronously (without awaits) in that loop, so every request is atomic.
"""

from .common import LoggedRequest
from .core import ApiServerEmulator
from .server import ApiServer

__all__ = ["ApiServer", "ApiServerEmulator", "LoggedRequest"]
