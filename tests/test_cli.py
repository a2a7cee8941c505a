"""`churn` itself: the model store follows --home whatever the command modules import, and
every command finds its default config from any folder and names it first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Every module that registers `churn` commands, imported as `churn` imports them.
CLI_MODULES = ("churn_cli", "training.cli", "service.cli", "monitoring.cli", "monitoring.log_cli",
               "monitoring.stack", "monitoring.k8s_assets", "rollout.cli", "rollout.cli_options",
               "rollout.shadow_cli", "rollout.lifecycle.cli", "drill.cli")


def python(code: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("BENTOML_HOME", "CHURN_HOME")}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(REPO), **(env or {})})


def test_importing_the_command_line_does_not_import_bentoml(tmp_path: Path) -> None:
    """BentoML reads BENTOML_HOME once, when first imported; `churn --home` sets it in the
    callback, after every command module is imported. A top-level `import bentoml` on that
    path would silently move the model store to ~/bentoml."""
    done = python("import importlib, sys\n"
                  f"for name in {CLI_MODULES!r}: importlib.import_module(name)\n"
                  "print(sorted(m for m in sys.modules if m.split('.')[0] == 'bentoml'))",
                  tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"imported at CLI import time: {done.stdout}"


def test_the_store_lives_under_home_as_bentoml_itself_sees_it(tmp_path: Path) -> None:
    """End to end: `churn --home H <command>`, then where this process's BentoML keeps its
    store (the adapter asks BentoML itself)."""
    home = tmp_path / "home"
    done = python(
        "import sys, churn_cli, typer\n"
        "@churn_cli.app.command('where-is-the-store')\n"
        "def where() -> None:\n"
        "    import bentoml  # noqa: F401 - what a command that touches the store does\n"
        "    from kernel.adapters.bentoml_internals import bentoml_home\n"
        "    print(bentoml_home())\n"
        f"sys.argv = ['churn', '--home', {str(home)!r}, 'where-is-the-store']\n"
        "churn_cli.main()\n", tmp_path)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == home / "bentoml"


def test_a_command_finds_the_projects_config_from_any_folder_and_says_so(
        tmp_path: Path) -> None:
    """From a folder without configs/ the project's file is read (not silently the defaults),
    and the first line on stderr names it."""
    done = subprocess.run(
        [sys.executable, "-m", "churn_cli", "log", "compact", "--dry-run", "--no-push",
         "--inference-log", str(tmp_path / "log")], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert first.endswith(f"config monitoring.yaml: {REPO / 'configs' / 'monitoring.yaml'} "
                          "(the project's file)"), done.stderr
    own = tmp_path / "configs"
    own.mkdir()
    (own / "monitoring.yaml").write_text("drift:\n  min_rows: 7\n")
    done = subprocess.run(
        [sys.executable, "-m", "churn_cli", "log", "compact", "--dry-run", "--no-push",
         "--inference-log", str(tmp_path / "log")], cwd=tmp_path, capture_output=True,
        text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stderr.splitlines()[0].endswith(
        f"config monitoring.yaml: {own / 'monitoring.yaml'} (found in the working directory)")
