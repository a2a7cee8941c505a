"""The real system the drill breaks, on this machine: an isolated model store and MLflow
database with a champion trained for the drill, `bentoml serve` processes, and Prometheus (the
project's rules, time-scaled) with a Pushgateway. Parts start when a scenario first needs them
and stop in ``close()``.

The drill never touches the user's state: ``isolate()`` points CHURN_HOME and BENTOML_HOME at
the drill's work folder before BentoML is imported, and every command it runs inherits them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import yaml

from drill.config import DrillConfig
from kernel.processes import ManagedProcess, free_port, http_ok, start_process

REPO = Path(__file__).resolve().parents[1]
SERVICE_TARGET = "service.service:ChurnService"
DATASET_ENV = "CHURN_MODEL_TAG"


class DrillSetupError(RuntimeError):
    """A part of the system the drill needs could not be set up (names the part and why)."""


@dataclass
class Service(ManagedProcess):
    """A running `bentoml serve` with its URL, served tag and inference-log folder."""

    url: str = ""
    log_dir: Path = field(default_factory=Path)
    folder: Path = field(default_factory=Path)

    def readyz(self) -> dict:
        answer = httpx.get(f"{self.url}/readyz", timeout=10)
        answer.raise_for_status()
        return answer.json()


@dataclass(frozen=True)
class StoreState:
    """What the model store and the MLflow registry hold for one dataset."""

    stages: dict[str, str]  # tag -> stage
    mlflow_versions: tuple[str, ...]
    mlflow_champion: str | None

    @property
    def champion(self) -> str | None:
        champions = [tag for tag, stage in self.stages.items() if stage == "champion"]
        return champions[0] if len(champions) == 1 else None


class DrillSystem:
    """The drill's running parts. ``say`` prints a progress line."""

    def __init__(self, settings: DrillConfig, workdir: Path,
                 say: Callable[[str], None] = lambda line: None) -> None:
        self.settings = settings
        self.workdir = workdir.resolve()
        self.home = self.workdir / "home"
        self.say = say
        self.services: list[Service] = []
        self._champion = None
        self._champion_service: Service | None = None
        self._stack = None
        self._worse = None  # the worse challenger's TrainingSummary
        self.rule_changes: list[str] = []

    # ------------------------------------------------------------------ state and settings

    def isolate(self) -> None:
        """Point this process (and every command it starts) at the drill's own home. Raises
        DrillSetupError when BentoML was already imported with another home."""
        self.home.mkdir(parents=True, exist_ok=True)
        store = str(self.home / "bentoml")
        if "bentoml" in sys.modules and os.environ.get("BENTOML_HOME") != store:
            raise DrillSetupError("BentoML was imported before the drill could isolate its "
                                  "model store: run the drill in a process of its own")
        os.environ.update({"CHURN_HOME": str(self.home), "BENTOML_HOME": store,
                           "BENTOML_DO_NOT_TRACK": "true", "MLFLOW_ENABLE_TELEMETRY": "false",
                           # MLflow configures its loggers at import, at INFO by default.
                           "MLFLOW_LOGGING_LEVEL": "ERROR"})
        # A model named in the user's shell must not leak into the drill's commands.
        os.environ.pop(DATASET_ENV, None)

    def path(self, relative: Path) -> Path:
        """A project file (configs/..., monitoring/...) relative to the repository."""
        return relative if relative.is_absolute() else REPO / relative

    def contract(self):
        from kernel.contract import DataContract

        return DataContract.from_yaml(self.path(self.settings.project.contract))

    def train_config(self):
        """The project's training config, with the drill's speed knobs and its own MLflow."""
        from kernel.paths import default_mlflow_uri
        from training.config import TrainConfig

        speed = self.settings.training
        return TrainConfig.from_yaml(self.path(self.settings.project.train)).model_copy(update={
            "algorithms": speed.algorithms, "imbalance": speed.imbalance,
            "cv_folds": speed.cv_folds, "max_trials": speed.max_trials,
            "search_budget_seconds": speed.search_budget_seconds, "ensemble": speed.ensemble,
            "reference_rows": speed.reference_rows,
            "mlflow_tracking_uri": default_mlflow_uri(self.home)})

    def train_config_file(self) -> Path:
        """The same config as a file, for `churn train --config`."""
        path = self.workdir / "train.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(self.train_config().model_dump(mode="json")))
        return path

    def monitoring_config(self, pushgateway: str | None = None):
        from monitoring.config import MonitoringConfig

        source = self.path(self.settings.project.monitoring)
        settings = MonitoringConfig.from_yaml(source if source.exists() else None)
        if pushgateway:
            settings.pushgateway.url = pushgateway
        return settings

    def monitoring_config_file(self, pushgateway: str) -> Path:
        path = self.workdir / "monitoring.yaml"
        path.write_text(yaml.safe_dump(self.monitoring_config(pushgateway).model_dump(
            mode="json", exclude_none=True)))
        return path

    def customers(self, rows: int, seed: int, drifted: bool = False,
                  keep_churn_rate: bool = True) -> pd.DataFrame:
        from training.generate import GeneratorConfig, generate_customers

        return generate_customers(GeneratorConfig(rows=rows, seed=seed, drifted=drifted,
                                                  keep_churn_rate=keep_churn_rate))

    def write_table(self, frame: pd.DataFrame, name: str) -> Path:
        path = self.workdir / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
        return path

    # ------------------------------------------------------------------ models

    def champion(self):
        """The drill's champion (trained on first use, ~20 s): every scenario that must leave
        a champion untouched compares against it."""
        if self._champion is None:
            from kernel.store import load_entry

            speed = self.settings.training
            self.say(f"  setup: training the drill's champion on {speed.rows} generated "
                     "customers")
            data = self.write_table(self.customers(speed.rows, speed.seed), "customers.csv")
            summary = self.train(data)
            if not summary.promoted:
                raise DrillSetupError(f"the drill's champion was not promoted: "
                                      f"{summary.decision}")
            self._champion = load_entry(summary.model_tag)
            self.say(f"  setup: champion {summary.model_tag} (test ROC-AUC "
                     f"{summary.roc_auc:.3f})")
        return self._champion

    def train(self, data: Path):
        """The training job in this process (its summary), MLflow's registration chatter,
        printed to stderr, kept in the work folder instead of between the progress lines."""
        from training.run import train_and_register

        with (self.workdir / "training.log").open("a") as chatter, \
                contextlib.redirect_stderr(chatter):
            return train_and_register(str(data), self.contract(), self.train_config(),
                                      self.home)

    @property
    def champion_tag(self) -> str | None:
        """The champion's tag once trained (None before any scenario needed it)."""
        return self._champion.tag if self._champion is not None else None

    def store_state(self, dataset: str) -> StoreState:
        """Stages in the model store and versions in the MLflow registry of ``dataset``."""
        from kernel.store import list_entries
        from training import tracking

        uri = self.train_config().mlflow_tracking_uri
        versions: tuple[str, ...] = ()
        champion = tracking.get_champion_version(uri, dataset)
        try:
            found = tracking.client(uri).search_model_versions(f"name='{dataset}'")
            versions = tuple(sorted(str(v.version) for v in found))
        except Exception:  # noqa: BLE001 - no registered model yet: nothing registered
            versions = ()
        return StoreState({e.tag: e.stage for e in list_entries(dataset)}, versions,
                          champion[0] if champion else None)

    def worse_challenger(self):
        """The training summary of a challenger trained where a label backfill went wrong:
        the older snapshots' labels shuffled among 60% of their rows (the contract cannot see
        it). The gate must reject it; the bad-canary scenario deploys it anyway."""
        if self._worse is None:
            import numpy as np


            self.champion()
            frame = self.customers(self.settings.training.rows, self.settings.training.seed + 4)
            rank = frame["snapshot_date"].rank(method="first").to_numpy()
            older = np.flatnonzero(rank <= 0.8 * len(frame))  # the test split keeps its labels
            rng = np.random.default_rng(3)
            pick = frame.index[rng.choice(older, int(0.6 * len(older)), replace=False)]
            frame.loc[pick, "churned"] = rng.permutation(frame.loc[pick, "churned"].to_numpy())
            path = self.write_table(frame, "label-backfill-bug.csv")
            self.say("  setup: training a challenger on labels broken by a backfill")
            self._worse = self.train(path)
        return self._worse

    # ------------------------------------------------------------------ commands

    def churn(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a `churn` command as a user or a CronJob would (same environment, the
        repository as working folder); returns exit code and output."""
        return subprocess.run([sys.executable, "-m", "churn_cli", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout,
                              env=os.environ.copy(), check=False)

    # ------------------------------------------------------------------ services

    def service_config(self, folder: Path, overrides: dict | None = None) -> Path:
        """The project's service config, with the log in ``folder`` and ``overrides`` on top."""
        from service.config import ServiceConfig

        source = self.path(self.settings.project.service)
        config = ServiceConfig.from_yaml(source if source.exists() else None).model_dump(
            mode="json")
        config["model_tag"] = config["model_name"] = None
        config["inference_log"]["directory"] = str(folder / "inference_log")
        for key, value in (overrides or {}).items():
            if isinstance(value, dict):
                config[key] = {**config.get(key, {}), **value}
            else:
                config[key] = value
        ServiceConfig.model_validate(config)  # a bad override is the drill's bug: fail here
        path = folder / "service.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def serve(self, name: str, overrides: dict | None = None, model_tag: str | None = None,
              port: int | None = None, env: dict[str, str] | None = None) -> Service:
        """`bentoml serve` of the champion (or ``model_tag``, named by CHURN_MODEL_TAG as a
        pod names it) on ``port`` (default a free one); returns once /readyz answers.

        Each server gets a BentoML home of its own whose models/ is the drill's store:
        `bentoml serve` empties $BENTOML_HOME/prometheus_multiproc_dir when it starts, so
        servers sharing a home would wipe each other's counters (a pod has its own)."""
        self.champion()  # the store the server reads must exist, with a champion in it
        folder = self.workdir / "services" / name
        folder.mkdir(parents=True, exist_ok=True)
        config = self.service_config(folder, overrides)
        home = folder / "bentoml_home"
        home.mkdir(exist_ok=True)
        if not (home / "models").exists():
            (home / "models").symlink_to(self.home / "bentoml" / "models")
        environment = {**os.environ, "CHURN_SERVICE_CONFIG": str(config),
                       "BENTOML_HOME": str(home), **(env or {})}
        if model_tag:
            environment[DATASET_ENV] = model_tag
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        self.say(f"  setup: bentoml serve ({name}) on port {port}")
        bentoml = str(Path(sys.executable).with_name("bentoml"))
        process = start_process(
            [bentoml, "serve", SERVICE_TARGET, "--host", "127.0.0.1", "--port", str(port)],
            name=f"bentoml serve ({name})", log_path=folder / "server.log", cwd=REPO,
            env=environment,
            ready=lambda: http_ok(f"{url}/readyz"),
            timeout=self.settings.server_timeout_seconds)
        service = Service(process.name, process.popen, process.log_path, url,
                          folder / "inference_log", folder)
        self.services.append(service)
        return service

    def champion_service(self) -> Service:
        """One long-running server of the champion (chosen by the store's champion label, as
        a pod without a pinned tag chooses it), shared by the scenarios that need not stop it."""
        if self._champion_service is None or not self._champion_service.running():
            self.champion()
            self._champion_service = self.serve("champion")
        return self._champion_service

    # ------------------------------------------------------------------ monitoring

    def prometheus_config(self) -> Path:
        """The project's prometheus.yml beside its rules, time-scaled (drill/rules.py)."""
        folder = self.workdir / "prometheus"
        config = folder / "prometheus.yml"
        if not config.exists():
            from drill.rules import write_scaled_rules

            folder.mkdir(parents=True, exist_ok=True)
            self.rule_changes = write_scaled_rules(self.path(self.settings.project.rules),
                                                   folder / "rules.yml",
                                                   self.settings.time_scale)
            config.write_text(self.path(self.settings.project.prometheus).read_text())
        return config

    def stack(self):
        """Prometheus (the project's rules, time-scaled) and a Pushgateway, scraping the
        champion's server with the label a stable pod carries."""
        if self._stack is None:
            from monitoring.stack import ScrapeTarget, start_stack

            service = self.champion_service()
            config = self.prometheus_config()
            self.say(f"  setup: Prometheus + Pushgateway, alert time x"
                     f"{self.settings.time_scale:g}")
            self._stack = start_stack(
                config.parent / "stack", config_path=config, prometheus_port=0,
                pushgateway_port=0, scrape_interval="1s", evaluation_interval="1s",
                service_targets=[ScrapeTarget(service.url.removeprefix("http://"),
                                              {"track": "stable"})])
        return self._stack

    # ------------------------------------------------------------------ the end

    def stop_service(self, service: Service, timeout: float = 30) -> None:
        """Stop one server the drill started (SIGTERM: it drains) and forget it, so ``close``
        does not stop it again; one already gone (killed by a scenario) is only forgotten."""
        if service in self.services:
            self.services.remove(service)
        service.stop(timeout=timeout)

    def close(self) -> None:
        """Stop every process the drill started (servers drain on SIGTERM)."""
        if self._stack is not None:
            self._stack.stop()
            self._stack = None
        for service in reversed(self.services):
            service.stop(timeout=30)
        self.services.clear()


def wait_until(condition: Callable[[], object], timeout: float, every: float = 0.5,
               what: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy (returned) or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met after {timeout:.0f} s")
        time.sleep(every)
