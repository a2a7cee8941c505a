"""kubectl, one argument list at a time: the calls the canary commands make, and the runner that
shows (``--dry-run``) or makes them.

Every call is built as an argument list (never a shell string), so what ``--dry-run`` prints is
exactly what runs. Calls that edit an object also know their offline twin (``Call.local``): the
same edit with ``kubectl ... --local -f FILE -o json``, which the tests replay on the rendered
manifests to prove the edited objects still validate. ``kubectl scale`` and ``kubectl rollout
restart`` have no ``--local``; their twin is the merge patch they amount to.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rollout.config import KubernetesSettings, duration_seconds

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PATCH_FILE = "{patch.json}"  # stands for the file a call's patch is written to


class KubectlError(RuntimeError):
    """kubectl failed (not found, no cluster, a refused edit, a rollout that did not finish)."""


@contextlib.contextmanager
def written(files: tuple[tuple[str, str], ...]) -> Iterator[dict[str, str]]:
    """Each (placeholder, text) written to a private temporary file for as long as the block
    runs; yields placeholder -> path."""
    if not files:
        yield {}
        return
    with tempfile.TemporaryDirectory(prefix="churn-kubectl-") as folder:
        paths = {}
        for number, (placeholder, text) in enumerate(files):
            path = Path(folder) / f"{number}.json"
            path.write_text(text)
            paths[placeholder] = str(path)
        yield paths


@dataclass(frozen=True)
class Call:
    """One kubectl invocation, without the binary and the global flags."""

    args: tuple[str, ...]
    what: str  # why it is made, for the log and --dry-run
    kind: str = "deployment"  # the object it reads or edits
    name: str = ""
    edits: bool = True
    waits: bool = False  # rollout status: skipped by --dry-run
    local: tuple[str, ...] | None = None  # the offline twin; "{file}" stands for the manifest
    # (placeholder, text): files written for the call only, their paths put in place of the
    # placeholders. A patch can outgrow what one argument may hold (Linux: 128 KiB).
    files: tuple[tuple[str, str], ...] = ()

    def local_args(self, file: str) -> list[str]:
        """The offline twin with ``file`` in place (KubectlError if there is none)."""
        if self.local is None:
            raise KubectlError(f"`kubectl {' '.join(self.args[:2])}` has no offline form")
        return [file if arg == "{file}" else arg for arg in self.local]


def _twin(*args: str) -> tuple[str, ...]:
    return (*args, "--local", "-f", "{file}", "-o", "json")


def _merge_patch_twin(patch: dict) -> tuple[str, ...]:
    return _twin("patch", "--type", "merge", "-p", json.dumps(patch, sort_keys=True))


def get(kind: str, name: str) -> Call:
    return Call(("get", kind, name, "-o", "json"), f"read {kind}/{name}", kind, name,
                edits=False)


def set_image(name: str, container: str, image: str) -> Call:
    return Call(("set", "image", f"deployment/{name}", f"{container}={image}"),
                f"{name} runs image {image}", "deployment", name,
                local=_twin("set", "image", f"{container}={image}"))


def set_env(name: str, container: str, variable: str, value: str, **more: str) -> Call:
    """``variable=value`` (and any ``more``) in one call. Replaces a valueFrom (the base reads
    the tag from a ConfigMap) with the value."""
    pairs = [f"{key}={val}" for key, val in {variable: value, **more}.items()]
    return Call(("set", "env", f"deployment/{name}", "-c", container, *pairs),
                f"{name} serves {', '.join(pairs)}", "deployment", name,
                local=_twin("set", "env", "-c", container, *pairs))


def patch_configmap(name: str, key: str, value: str) -> Call:
    patch = {"data": {key: value}}
    text = json.dumps(patch, sort_keys=True)
    return Call(("patch", "configmap", name, "--type", "merge", "-p", text),
                f"configmap {name}: {key}={value}", "configmap", name,
                local=_merge_patch_twin(patch))


def create_configmap(name: str, data: dict[str, str]) -> Call:
    pairs = [f"--from-literal={key}={value}" for key, value in data.items()]
    return Call(("create", "configmap", name, *pairs), f"create configmap {name}", "configmap",
                name)


def json_patch_configmap(name: str, patch: list[dict], what: str) -> Call:
    """A JSON patch (RFC 6902): its ``test`` operations make it conditional, applied whole or
    refused by the API server. It goes in a file (``--patch-file``): the lifecycle's state
    outgrows the 128 KiB one command-line argument may hold after a few cycles."""
    text = json.dumps(patch, sort_keys=True)
    return Call(("patch", "configmap", name, "--type", "json", "--patch-file", PATCH_FILE),
                what, "configmap", name,
                local=_twin("patch", "--type", "json", "-p", text),
                files=((PATCH_FILE, text),))


def scale(name: str, replicas: int) -> Call:
    return Call(("scale", f"deployment/{name}", f"--replicas={replicas}"),
                f"{name} to {replicas} replica{'s' if replicas != 1 else ''}", "deployment", name,
                local=_merge_patch_twin({"spec": {"replicas": replicas}}))


def annotate(name: str, annotations: dict[str, str]) -> Call:
    pairs = [f"{key}={value}" for key, value in annotations.items()]
    return Call(("annotate", f"deployment/{name}", "--overwrite", *pairs),
                f"record on {name}: {annotations.get(DECISION, '')}", "deployment", name,
                local=_twin("annotate", "--overwrite", *pairs))


def patch_deployment(name: str, patch: dict, what: str) -> Call:
    """A strategic merge patch: containers and env entries merge by name, so one call can
    change a container's image, an env var and the pod labels in one rollout."""
    text = json.dumps(patch, sort_keys=True)
    return Call(("patch", f"deployment/{name}", "--type", "strategic", "-p", text), what,
                "deployment", name, local=_twin("patch", "--type", "strategic", "-p", text))


def rollout_status(name: str, timeout: str) -> Call:
    return Call(("rollout", "status", f"deployment/{name}", f"--timeout={timeout}"),
                f"wait until {name} is rolled out", "deployment", name, edits=False, waits=True)


def rollout_undo(name: str, revision: str | None = None) -> Call:
    to = (f"--to-revision={revision}",) if revision else ()
    return Call(("rollout", "undo", f"deployment/{name}", *to),
                f"{name} back to its previous pod template", "deployment", name)


# Where a canary's (and a shadow's) state is recorded: annotations on a Deployment.
PREFIX = "churn-serve/"
DECISION = PREFIX + "canary-decision"
REASON = PREFIX + "canary-reason"
STEP = PREFIX + "canary-step"
UPDATED = PREFIX + "canary-updated"


def decision_annotations(decision: str, reason: str, step: str | None = None,
                         at: str | None = None, subject: str = "canary") -> dict[str, str]:
    """``churn-serve/<subject>-decision``, ``-reason``, ``-updated`` (and ``-step``)."""
    key = f"{PREFIX}{subject}-"
    notes = {key + "decision": decision, key + "reason": reason,
             key + "updated": at or datetime.now(UTC).isoformat(timespec="seconds")}
    if step is not None:
        notes[key + "step"] = step
    return notes


def restart(name: str, at: str) -> Call:
    """What ``kubectl rollout restart`` does, as a patch with an offline twin: the pods read a
    ConfigMap value again."""
    return patch_deployment(name, {"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT: at}}}}}, f"restart {name}'s pods (they read the ConfigMap again)")


def append_decision(log: Path, entry: dict) -> None:
    """One JSON line in a local decision log (what the person or job that acted keeps)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


@dataclass
class Kubectl:
    """Runs calls with the configured binary, context and namespace. With ``dry_run``, calls
    that edit or wait are only shown; reads still run (the plan depends on what they find)."""

    settings: KubernetesSettings
    dry_run: bool = False
    echo: Callable[[str], None] = lambda line: None  # the CLI shows every edit it makes
    history: list[list[str]] = field(default_factory=list)

    def argv(self, call: Call) -> list[str]:
        argv = [self.settings.kubectl]
        if self.settings.context:
            argv += ["--context", self.settings.context]
        if self.settings.namespace:
            argv += ["--namespace", self.settings.namespace]
        return argv + list(call.args)

    def run(self, call: Call) -> str:
        """Make (or show) the call; return its stdout. Raises KubectlError on failure."""
        argv = self.argv(call)
        self.history.append(argv)
        shown = shlex.join(argv)
        if self.dry_run and (call.edits or call.waits):
            self.echo(f"(dry run) {shown}")
            return ""
        if call.edits or call.waits:
            self.echo(f"+ {shown}")
        timeout = None
        if call.waits:
            # rollout status has its own --timeout; this only guards a hung kubectl
            timeout = duration_seconds(self.settings.rollout_timeout) + 60
        done = self._execute(argv, timeout, call.files)
        if done.returncode != 0:
            message = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise KubectlError(f"{shown} failed: {message[-1] if message else done.returncode}")
        return done.stdout

    def probe(self, call: Call, timeout: float = 60) -> subprocess.CompletedProcess:
        """Make a read whose failure is itself the answer (NotFound, `auth can-i` saying no)
        and return the finished process. Raises KubectlError only when kubectl cannot run."""
        if call.edits or call.waits:
            raise KubectlError(f"`kubectl {' '.join(call.args[:2])}` is not a read")
        argv = self.argv(call)
        self.history.append(argv)
        return self._execute(argv, timeout)

    def _execute(self, argv: list[str], timeout: float | None,
                 files: tuple[tuple[str, str], ...] = ()) -> subprocess.CompletedProcess:
        try:
            with written(files) as paths:
                return subprocess.run([paths.get(arg, arg) for arg in argv], capture_output=True,
                                      text=True, timeout=timeout, check=False)
        except FileNotFoundError as exc:
            raise KubectlError(f"kubectl not found ({self.settings.kubectl}): install it or "
                               "set kubernetes.kubectl in configs/canary.yaml") from exc
        except subprocess.TimeoutExpired as exc:
            raise KubectlError(f"{shlex.join(argv)} did not finish in {timeout} s") from exc

    def read(self, kind: str, name: str) -> dict:
        """The object as JSON (always read, also in a dry run)."""
        return json.loads(self.run(get(kind, name)))
