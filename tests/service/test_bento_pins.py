"""The image installs exactly the locked versions of what serving imports."""

from __future__ import annotations

import pytest
import yaml

from service.bento_pins import REPO, locked_versions, pin


def test_bentofile_pins_equal_the_lock():
    text = (REPO / "bentofile.yaml").read_text()
    assert pin(text, locked_versions(REPO / "uv.lock")) == text, \
        "bentofile.yaml is out of date: run `make lock` (python -m service.bento_pins)"
    packages = yaml.safe_load(text)["python"]["packages"]
    assert all("==" in p for p in packages)
    assert not {"mlflow", "optuna", "evidently", "imbalanced-learn"} & {
        p.split("==")[0] for p in packages}


def test_pin_rewrites_only_the_package_list_and_refuses_unknown_packages():
    text = 'include:\n  - "x.py"\npython:\n  packages:\n    - "numpy>=1"  # why\n' \
           'docker:\n  distro: debian\n'
    assert pin(text, {"numpy": "2.0.1"}) == text.replace('"numpy>=1"', '"numpy==2.0.1"')
    with pytest.raises(KeyError, match="numpy"):
        pin(text, {})


def _module_level_imports(path) -> set[str]:
    """Project modules a file imports when it is imported (function-level imports run later,
    if ever, so they are not part of what the Bento must carry to start)."""
    import ast

    found = set()
    for node in ast.parse(path.read_text()).body:  # top level only
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in {"kernel", "service", "training",
                                                    "monitoring"}}


def test_the_bento_packs_every_module_the_service_imports_at_start():
    import fnmatch

    bentofile = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    files = {str(p.relative_to(REPO)) for p in REPO.rglob("*.py") if ".venv" not in p.parts}
    packed = {f for f in files if any(fnmatch.fnmatch(f, pattern)
                                      for pattern in bentofile["include"])}
    packed -= {f for f in files if any(fnmatch.fnmatch(f, p) for p in bentofile["exclude"])}
    todo, seen = ["service/service.py"], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in _module_level_imports(REPO / current):
            for candidate in (module.replace(".", "/") + ".py",
                              module.replace(".", "/") + "/__init__.py"):
                if candidate in files:
                    todo.append(candidate)
    missing = sorted(seen - packed)
    assert not missing, f"bentofile.yaml does not pack {missing}, which the service imports"
    assert not {f for f in seen if f.startswith(("training/", "monitoring/"))}
