"""A stand-in Kubernetes API server the *real* kubectl talks to over HTTP, for `churn k8s check`.

Why a stand-in: no API server can run on this machine or in CI (no registry serves one). The
canary tests' stand-in (fake_kubectl.py) replaces the kubectl binary and makes edits with the
real one offline; a preflight only reads, and what it must prove is that the real kubectl,
given its argument lists, finds what a cluster has: so here kubectl is untouched and the server
answers what it asks. It keeps the same kind of state (objects as JSON) and simulates only what
a server would add: discovery (built-in groups, plus those of the stored CRDs), lists and gets
(with NotFound), SelfSubjectAccessReviews (allowed unless denied), and pods created by
`kubectl run` whose image pull succeeds for the images listed as pullable. Every request is
recorded, so a test can tell what kubectl asked.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


BUILT_IN = (
    Resource("", "v1", "namespaces", "Namespace", False),
    Resource("", "v1", "pods", "Pod", True),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "configmaps", "ConfigMap", True),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    Resource("apps", "v1", "deployments", "Deployment", True, ("scale",)),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True),
    Resource("storage.k8s.io", "v1", "storageclasses", "StorageClass", False),
    Resource("storage.k8s.io", "v1", "csidrivers", "CSIDriver", False),
    Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
             "CustomResourceDefinition", False),
    Resource("apiregistration.k8s.io", "v1", "apiservices", "APIService", False),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews",
             "SelfSubjectAccessReview", False),
)
# How a pod created by `kubectl run` fails to pull an image that is not pullable.
PULL_ERROR = "Failed to pull image \"{image}\": not found"


@dataclass
class Cluster:
    """What the stand-in server holds: objects, the version it reports, the permissions it
    denies ((verb, resource, subresource) answered "no"), the images nodes can pull."""

    objects: list[dict] = field(default_factory=list)
    version: str = "v1.36.1"
    denied: set[tuple[str, str, str]] = field(default_factory=set)
    pullable: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def add(self, *objects: dict) -> Cluster:
        self.objects += [copy.deepcopy(o) for o in objects]
        return self

    def remove(self, kind: str, name: str) -> Cluster:
        before = len(self.objects)
        self.objects = [o for o in self.objects
                        if (o["kind"], o["metadata"]["name"]) != (kind, name)]
        assert len(self.objects) < before, f"no {kind} {name} to remove"
        return self

    def resources(self) -> list[Resource]:
        out = list(BUILT_IN)
        for crd in self.objects:
            if crd["kind"] != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            out += [Resource(spec["group"], v["name"], spec["names"]["plural"],
                             spec["names"]["kind"], spec["scope"] == "Namespaced")
                    for v in spec["versions"] if v.get("served", True)]
        return out


PROTOBUF_MAGIC = b"k8s\x00"
# authorization/v1 ResourceAttributes field numbers (k8s.io/api generated.proto).
RESOURCE_ATTRIBUTES = {1: "namespace", 2: "verb", 3: "group", 4: "version", 5: "resource",
                       6: "subresource", 7: "name"}


def _protobuf_fields(data: bytes) -> dict[int, list[bytes | int]]:
    """The fields of one protobuf message (wire types varint and length-delimited only)."""
    fields: dict[int, list[bytes | int]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.setdefault(number, []).append(varint())
        elif wire == 2:
            length = varint()
            fields.setdefault(number, []).append(data[i:i + length])
            i += length
        else:
            raise ValueError(f"protobuf wire type {wire} is not simulated")
    return fields


def access_review_attributes(data: bytes) -> dict[str, str]:
    """resourceAttributes of a protobuf SelfSubjectAccessReview: the runtime.Unknown envelope
    (magic, then raw = field 2), the review (spec = field 2), the spec (resourceAttributes =
    field 1)."""
    raw = _protobuf_fields(data[len(PROTOBUF_MAGIC):])[2][0]
    spec = _protobuf_fields(_protobuf_fields(raw)[2][0])
    attributes = _protobuf_fields(spec[1][0]) if 1 in spec else {}
    return {RESOURCE_ATTRIBUTES[n]: v[0].decode() for n, v in attributes.items()
            if n in RESOURCE_ATTRIBUTES}


def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    cluster: Cluster

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass  # the requests are recorded in cluster.requests

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[Resource | None, str | None, str | None, str | None]:
        """(resource, namespace, name, subresource) of a resource path, else Nones."""
        parts = [p for p in urlparse(self.path).path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None, None, None, None
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            return None, None, None, None
        for resource in self.cluster.resources():
            if (resource.group, resource.version, resource.plural) == (group, version, rest[0]):
                name = rest[1] if len(rest) > 1 else None
                sub = rest[2] if len(rest) > 2 else None
                return resource, namespace, name, sub
        return None, None, None, None

    def _matches(self, obj: dict, resource: Resource, namespace: str | None) -> bool:
        if obj["kind"] != resource.kind:
            return False
        if resource.namespaced and namespace is not None:
            return obj["metadata"].get("namespace") == namespace
        return True

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.cluster.requests.append(("GET", self.path))
        path = urlparse(self.path).path.rstrip("/")
        if path == "/version":
            major, minor = self.cluster.version.lstrip("v").split(".")[:2]
            self._send(200, {"major": major, "minor": minor,
                             "gitVersion": self.cluster.version, "platform": "linux/amd64"})
            return
        resources = self.cluster.resources()
        if path == "/api":
            self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                             "serverAddressByClientCIDRs": []})
            return
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for r in resources:
                if r.group and r.version not in groups.setdefault(r.group, []):
                    groups[r.group].append(r.version)
            self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}
                                         for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in groups.items()]})
            return
        listed = [r for r in resources if f"/{'api' if not r.group else 'apis'}/"
                  f"{r.group_version}" == path]
        if listed or path == "/api/v1":
            entries = []
            for r in listed:
                verbs = (["create"] if r.kind == "SelfSubjectAccessReview" else
                         ["get", "list", "watch", "create", "delete", "patch", "update"])
                entries.append({"name": r.plural, "singularName": r.kind.lower(),
                                "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs})
                entries += [{"name": f"{r.plural}/{s}", "singularName": "",
                             "namespaced": r.namespaced, "kind": "Scale",
                             "group": "autoscaling", "version": "v1",
                             "verbs": ["get", "patch", "update"]} for s in r.subresources]
            self._send(200, {"kind": "APIResourceList", "apiVersion": "v1",
                             "groupVersion": listed[0].group_version if listed else "v1",
                             "resources": entries})
            return
        resource, namespace, name, _ = self._route()
        if resource is None:
            self._send(404, _status(404, "NotFound", "the server could not find the requested "
                                    "resource"))
            return
        found = [o for o in self.cluster.objects if self._matches(o, resource, namespace)]
        if name is None:
            selector = parse_qs(urlparse(self.path).query).get("labelSelector", [""])[0]
            wanted = dict(p.split("=", 1) for p in selector.split(",") if "=" in p)
            found = [o for o in found if wanted.items() <= o["metadata"].get(
                "labels", {}).items()]
            self._send(200, {"kind": f"{resource.kind}List",
                             "apiVersion": resource.group_version,
                             "metadata": {"resourceVersion": "1"}, "items": found})
            return
        for obj in found:
            if obj["metadata"]["name"] == name:
                self._send(200, obj)
                return
        group = f".{resource.group}" if resource.group else ""
        self._send(404, {**_status(404, "NotFound",
                                   f'{resource.plural}{group} "{name}" not found'),
                         "details": {"name": name, "kind": resource.plural}})

    def do_POST(self) -> None:  # noqa: N802
        self.cluster.requests.append(("POST", self.path))
        data = self.rfile.read(int(self.headers["Content-Length"]))
        resource, namespace, _, _ = self._route()
        if resource is not None and resource.kind == "SelfSubjectAccessReview":
            # kubectl sends this one as protobuf; the answer may be JSON (it accepts both).
            attributes = (access_review_attributes(data) if data.startswith(PROTOBUF_MAGIC)
                          else json.loads(data)["spec"]["resourceAttributes"])
            body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "metadata": {}, "spec": {"resourceAttributes": attributes}}
            asked = (attributes.get("verb", ""), attributes.get("resource", ""),
                     attributes.get("subresource", ""))
            allowed = asked not in self.cluster.denied
            self._send(201, {**body, "status": {"allowed": allowed,
                                                "reason": "" if allowed else "denied here"}})
            return
        body = json.loads(data or b"{}")
        if resource is not None and resource.kind == "Pod" and namespace:
            if not any(o["kind"] == "Namespace" and o["metadata"]["name"] == namespace
                       for o in self.cluster.objects):
                self._send(404, _status(404, "NotFound", f'namespaces "{namespace}" not found'))
                return
            pod = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
            statuses = []
            for container in pod["spec"]["containers"]:
                image = container["image"]
                state = ({"terminated": {"exitCode": 0, "reason": "Completed"}}
                         if image in self.cluster.pullable else
                         {"waiting": {"reason": "ErrImagePull",
                                      "message": PULL_ERROR.format(image=image)}})
                statuses.append({"name": container["name"], "image": image, "state": state,
                                 "ready": False, "restartCount": 0})
            pulled = all("terminated" in s["state"] for s in statuses)
            pod["status"] = {"phase": "Succeeded" if pulled else "Pending",
                             "containerStatuses": statuses}
            self.cluster.objects.append(pod)
            self._send(201, pod)
            return
        self._send(405, _status(405, "MethodNotAllowed", f"POST {self.path} is not simulated"))

    def do_DELETE(self) -> None:  # noqa: N802
        self.cluster.requests.append(("DELETE", self.path))
        resource, namespace, name, _ = self._route()
        for obj in list(self.cluster.objects):
            if resource and self._matches(obj, resource, namespace) and \
                    obj["metadata"]["name"] == name:
                self.cluster.objects.remove(obj)
                self.cluster.deleted.append(f"{resource.plural}/{name}")
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                return
        self._send(404, _status(404, "NotFound", f'"{name}" not found'))


class _Server(ThreadingHTTPServer):
    # kubectl fetches discovery over a dozen connections at once; the default backlog (5) makes
    # the rest wait a second for a SYN retransmit.
    request_queue_size = 64
    daemon_threads = True


class StandInServer:
    """The server on a free loopback port, in a thread, with a kubeconfig pointing at it."""

    def __init__(self, cluster: Cluster, directory: Path, context: str = "stand-in"):
        handler = type("Handler", (_Handler,), {"cluster": cluster})
        self.cluster = cluster
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.context = context
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {}}],
            "contexts": [{"name": context, "context": {"cluster": context, "user": "tester",
                                                       "namespace": "default"}}]}))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StandInServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
