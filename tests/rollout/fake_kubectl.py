"""A stand-in for a Kubernetes API server behind kubectl, for the canary command tests.

Why a stand-in: no API server can run on this machine or in CI (no registry serves one, and
kubectl's --dry-run=client still needs one). It stays as real as it can: every edit is made by
the *real* kubectl (``--local -f OBJECT -o json``), on objects kept as JSON files in
``$FAKE_KUBE_DIR``; only what a server would add is simulated: pods become ready at once, the
pod-template history behind ``rollout undo``, and a rollout that never finishes for the models
or images listed in ``$FAKE_KUBE_DIR/broken.json`` (fault injection: a model that crashes).

Usage: ``python fake_kubectl.py [--context C] [--namespace N] VERB ...``, as kubectl.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_KUBE_DIR"])
KUBECTL = os.environ.get("REAL_KUBECTL") or shutil.which("kubectl")


def path_of(kind: str, name: str) -> Path:
    return STATE / f"{kind.lower()}-{name}.json"


def load(kind: str, name: str) -> dict:
    path = path_of(kind, name)
    if not path.exists():
        sys.exit(f'Error from server (NotFound): {kind}s "{name}" not found')
    return json.loads(path.read_text())


def save(obj: dict) -> None:
    path_of(obj["kind"], obj["metadata"]["name"]).write_text(json.dumps(obj, indent=1))


def local_edit(kind: str, name: str, *args: str) -> dict:
    """Run the real kubectl offline on the stored object and store what it returns."""
    obj = load(kind, name)
    source = STATE / "edit-input.json"
    source.write_text(json.dumps(obj))
    done = subprocess.run([KUBECTL, *args, "--local", "-f", str(source), "-o", "json"],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(done.stderr.strip())
    if not done.stdout.strip():  # kubectl prints nothing when the edit changes nothing
        return obj
    edited = json.loads(done.stdout)
    edited.setdefault("status", obj.get("status", {}))
    return edited


def template_changed(before: dict, after: dict) -> None:
    """Keep the pod-template history (the ReplicaSets a server would keep)."""
    if before["spec"]["template"] != after["spec"]["template"]:
        history = STATE / f"history-{after['metadata']['name']}.json"
        past = json.loads(history.read_text()) if history.exists() else []
        history.write_text(json.dumps([*past, before["spec"]["template"]]))


def served(deployment: dict) -> set[str]:
    """The image and model tag the deployment's pods would run."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    out = {container["image"]}
    for env in container.get("env", []):
        if "value" in env:
            out.add(env["value"])
        elif "configMapKeyRef" in env.get("valueFrom", {}):
            ref = env["valueFrom"]["configMapKeyRef"]
            out.add(load("configmap", ref["name"]).get("data", {}).get(ref["key"], ""))
    return out


def main(argv: list[str]) -> None:
    with (STATE / "calls.jsonl").open("a") as log:
        log.write(json.dumps(argv) + "\n")
    while argv and argv[0] in ("--context", "--namespace"):
        argv = argv[2:]
    verb, rest = argv[0], argv[1:]
    # Fault injection: verbs listed in forbidden.json are refused, as RBAC would.
    forbidden = json.loads((STATE / "forbidden.json").read_text()) \
        if (STATE / "forbidden.json").exists() else []
    if verb in forbidden:
        sys.exit(f'Error from server (Forbidden): the server does not allow "{verb}"')
    if verb == "create" and rest[0] == "configmap":
        name = rest[1]
        if path_of("ConfigMap", name).exists():
            sys.exit(f'Error from server (AlreadyExists): configmaps "{name}" already exists')
        data = dict(pair.removeprefix("--from-literal=").split("=", 1) for pair in rest[2:])
        save({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
              "data": data})
        print(f"configmap/{name} created")
        return
    if verb == "get":
        kind, name = rest[0], rest[1]
        print(json.dumps(load(kind, name)))
        return
    if verb == "rollout":
        action, (kind, name) = rest[0], rest[1].split("/")
        obj = load(kind, name)
        if action == "status":
            broken = json.loads((STATE / "broken.json").read_text()) \
                if (STATE / "broken.json").exists() else []
            if obj["spec"].get("replicas", 1) and served(obj) & set(broken):
                sys.exit(f'error: deployment "{name}" exceeded its progress deadline')
            obj["status"] = {"replicas": obj["spec"].get("replicas", 1),
                             "readyReplicas": obj["spec"].get("replicas", 1)}
            save(obj)
            print(f'deployment "{name}" successfully rolled out')
            return
        if action == "undo":
            history = STATE / f"history-{name}.json"
            past = json.loads(history.read_text()) if history.exists() else []
            if not past:
                sys.exit(f'error: no rollout history found for deployment "{name}"')
            obj["spec"]["template"] = past.pop()
            history.write_text(json.dumps(past))
            save(obj)
            print(f"deployment.apps/{name} rolled back")
            return
        sys.exit(f"fake kubectl: rollout {action} is not simulated")
    if verb == "scale":
        kind, name = rest[0].split("/")
        replicas = int(rest[1].removeprefix("--replicas="))
        edited = local_edit(kind, name, "patch", "--type", "merge", "-p",
                            json.dumps({"spec": {"replicas": replicas}}))
        save(edited)
        return
    if verb in ("set", "annotate", "patch"):
        if verb == "set":
            target, args = rest[1], [verb, rest[0], *rest[2:]]
        elif verb == "annotate" or "/" in rest[0]:  # annotate|patch deployment/NAME ...
            target, args = rest[0], [verb, *rest[1:]]
        else:  # patch configmap NAME ...
            target, args = f"{rest[0]}/{rest[1]}", [verb, *rest[2:]]
        kind, name = target.split("/")
        before = load(kind, name)
        edited = local_edit(kind, name, *args)
        if kind == "deployment":
            template_changed(before, edited)
        save(edited)
        return
    sys.exit(f"fake kubectl: {verb} is not simulated")


if __name__ == "__main__":
    main(sys.argv[1:])
