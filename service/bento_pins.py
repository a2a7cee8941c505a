"""Pin the Bento's serving-only packages to the versions in ``uv.lock``.

The model is pickled by the training environment (``uv.lock``); unpickling it in the image with
another scikit-learn or XGBoost release is at best a warning, at worst a different model. So the
image installs exactly the locked versions of what serving imports, and nothing else (no MLflow,
Optuna, Evidently). ``python -m service.bento_pins`` rewrites ``bentofile.yaml``'s list;
``make lock`` and ``make upgrade`` run it, and a test fails when the two disagree.
Not packed into the Bento (a build-time tool).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PACKAGE_LINE = re.compile(r'^(\s*-\s*")([A-Za-z0-9_.\-]+)([^"]*)(".*)$')


def locked_versions(lock: Path) -> dict[str, str]:
    """Package name -> version, from a uv.lock file."""
    return {p["name"]: p["version"] for p in tomllib.loads(lock.read_text())["package"]
            if "version" in p}


def pin(bentofile: str, versions: dict[str, str]) -> str:
    """``bentofile`` with every entry of ``python.packages`` pinned to ``versions``.
    Raises KeyError naming a package the lock does not have."""
    out, in_packages = [], False
    for line in bentofile.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == "packages:":
            in_packages = True
        elif in_packages and stripped and not stripped.startswith(("-", "#")):
            in_packages = False
        match = _PACKAGE_LINE.match(line) if in_packages else None
        if match:
            name = match.group(2)
            if name.lower() not in versions:
                raise KeyError(f"{name} is in bentofile.yaml but not in uv.lock")
            line = f"{match.group(1)}{name}=={versions[name.lower()]}{match.group(4)}\n"
        out.append(line)
    return "".join(out)


def main() -> None:
    bentofile = REPO / "bentofile.yaml"
    pinned = pin(bentofile.read_text(), locked_versions(REPO / "uv.lock"))
    changed = pinned != bentofile.read_text()
    bentofile.write_text(pinned)
    sys.stdout.write(f"bentofile.yaml {'updated to' if changed else 'already matches'} uv.lock\n")


if __name__ == "__main__":
    main()
