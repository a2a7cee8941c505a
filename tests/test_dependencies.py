"""The package dependency rule, enforced: `kernel` <- `training`, `service`, `monitoring` <-
`rollout` <- `drill`. Every import counts, module-level or inside a function (a lazy import is
still a dependency: it only hides it from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("kernel", "training", "service", "monitoring", "rollout", "drill")
# Which project packages each package may import (itself always).
ALLOWED = {
    "kernel": set(),
    "training": {"kernel"},
    "service": {"kernel"},
    "monitoring": {"kernel"},
    "rollout": {"kernel", "training", "service", "monitoring"},
    "drill": {"kernel", "training", "service", "monitoring", "rollout"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """Project packages ``path`` imports -> the first line that imports each."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES:
                found.setdefault(top, node.lineno)
    return found


def package_graph() -> dict[str, dict[str, str]]:
    """package -> imported package -> one place that imports it (path:line)."""
    graph: dict[str, dict[str, str]] = {package: {} for package in PACKAGES}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for imported, line in imported_packages(path).items():
                if imported != package:
                    graph[package].setdefault(imported, f"{path.relative_to(REPO)}:{line}")
    return graph


def test_every_import_follows_the_dependency_rule() -> None:
    forbidden = {f"{package} -> {imported} ({where})"
                 for package, edges in package_graph().items()
                 for imported, where in edges.items() if imported not in ALLOWED[package]}
    assert not forbidden, "imports against the rule kernel <- training, service, monitoring " \
        f"<- rollout <- drill: {sorted(forbidden)}"


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The check itself sees module-level and lazy imports alike."""
    module = tmp_path / "jobs.py"
    module.write_text("import numpy\nfrom kernel import store\n\ndef run():\n"
                      "    from service.inference_log import InferenceLogWriter\n"
                      "    import drill.cli\n")
    assert imported_packages(module) == {"kernel": 2, "service": 5, "drill": 6}
