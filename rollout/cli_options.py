"""The options every command that acts on the cluster shares (`churn canary start|status|
promote|abort|run`), declared once: ``cluster_command`` adds them to a command's signature and
hands the command one ``ClusterOptions`` with the config they resolve to.

Imports nothing heavy at import time: every `churn` command imports this module to register the
canary commands.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from rollout import CONFIG_NAME

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", help=f"Rollout config YAML (Deployment names, kubectl, thresholds, steps); "
    f"default "
    f"configs/{CONFIG_NAME} of the working directory, else of the project, else built-in "
    "defaults (the first log line says which).")]
KubectlOption = Annotated[str | None, typer.Option(
    "--kubectl", help="kubectl binary; default kubernetes.kubectl from the config.")]
ContextOption = Annotated[str | None, typer.Option(
    "--context", help="kubeconfig context; default kubernetes.context, else the current one.")]
NamespaceOption = Annotated[str | None, typer.Option(
    "--namespace", "-n", help="Namespace of both Deployments; default kubernetes.namespace, "
    "else the context's.")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", help="Print every kubectl call that would edit or wait, as an argument list, "
    "without making it (reads still run: the plan depends on them).")]
DecisionLogOption = Annotated[Path | None, typer.Option(
    "--decision-log", help="JSON-lines log of decisions; default $CHURN_HOME/canary/"
    "decisions.jsonl (shadow: $CHURN_HOME/shadow/decisions.jsonl).")]
PrometheusOption = Annotated[str | None, typer.Option(
    "--prometheus", help="Prometheus base URL; default prometheus_url from the config.")]

InferenceLogOption = Annotated[Path | None, typer.Option(
    "--inference-log", help="Inference log folder the service writes (where the predictions "
    "are judged from); default inference_log_dir of configs/monitoring.yaml, else "
    "$CHURN_HOME/inference_log. In Kubernetes: the shared volume, as the analysis Job mounts "
    "it.")]
JudgeConfigOption = Annotated[Path | None, typer.Option(
    "--judge-config", help="Judge config YAML (tolerances, score, sequential looks); default "
    "configs/judge.yaml by the project's rule, else built-in defaults. docs/judge.md.")]
PushgatewayOption = Annotated[str | None, typer.Option(
    "--pushgateway", help="Pushgateway URL for the judgement's gauges; default pushgateway.url "
    "of configs/monitoring.yaml.")]
NoPushOption = Annotated[bool, typer.Option(
    "--no-push", help="Push nothing (the dashboards and the alert read the pushed "
    "judgement).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]

_READING = {"config": ConfigOption, "kubectl": KubectlOption, "context": ContextOption,
            "namespace": NamespaceOption}
_EDITING = {"dry_run": (DryRunOption, False), "decision_log": (DecisionLogOption, None)}


def logging_to_stderr() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("churn").setLevel(logging.INFO)


def load_config(path: Path | None, kubectl: str | None = None, context: str | None = None,
                namespace: str | None = None, prometheus: str | None = None):
    """The canary config by the project's rule, with the command line's overrides."""
    from rollout.config import CanaryConfig

    logging_to_stderr()
    config = CanaryConfig.locate(path)
    for key, value in {"kubectl": kubectl, "context": context, "namespace": namespace}.items():
        if value:
            setattr(config.kubernetes, key, value)
    if prometheus:
        config.prometheus_url = prometheus
    return config


@dataclass(frozen=True)
class ClusterOptions:
    """What the shared options resolve to."""

    config: Any  # rollout.config.CanaryConfig (not imported here: see the module docstring)
    dry_run: bool = False
    decision_log: Path | None = None

    def shadow(self):
        """The shadow commands on this cluster, recording to the decision log."""
        from kernel.paths import churn_home
        from rollout.kubectl import Kubectl
        from rollout.shadow import Shadow

        runner = Kubectl(self.config.kubernetes, dry_run=self.dry_run, echo=typer.echo)
        log = self.decision_log or churn_home() / "shadow" / "decisions.jsonl"
        return Shadow(self.config.kubernetes, runner, log, echo=typer.echo)

    def canary(self):
        """The canary commands on this cluster, recording to the decision log."""
        from kernel.paths import churn_home
        from rollout.canary import Canary
        from rollout.kubectl import Kubectl

        runner = Kubectl(self.config.kubernetes, dry_run=self.dry_run, echo=typer.echo)
        log = self.decision_log or churn_home() / "canary" / "decisions.jsonl"
        return Canary(self.config, runner, log, echo=typer.echo)


def option_bundle(name: str, options: dict[str, tuple[Any, Any]],
                  build: Callable[[dict[str, Any]], Any]
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``options`` (parameter name -> (annotated type, default)) to the decorated command's
    signature; the command takes one keyword ``name`` instead: ``build`` of their values.
    Bundles stack (``cluster_command`` is one)."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.name != name]
        shared = [inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                    default=default)
                  for option, (kind, default) in options.items()]

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            bundled = {option: values.pop(option) for option in options}
            return command(**values, **{name: build(bundled)})

        wrapper.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + shared)
        return wrapper

    return decorate


def cluster_command(*, edits: bool = True, prometheus: bool = False
                    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --config, --kubectl, --context, --namespace (and, for a command that ``edits``,
    --dry-run and --decision-log; with ``prometheus``, --prometheus) to the decorated command,
    which takes a keyword ``cluster: ClusterOptions`` instead of them."""
    options: dict[str, tuple[Any, Any]] = {name: (kind, None) for name, kind in _READING.items()}
    if edits:
        options.update(_EDITING)
    if prometheus:
        options["prometheus"] = (PrometheusOption, None)

    def build(values: dict[str, Any]) -> ClusterOptions:
        config = load_config(values["config"], values["kubectl"], values["context"],
                             values["namespace"], values.get("prometheus"))
        return ClusterOptions(config, values.get("dry_run", False), values.get("decision_log"))

    return option_bundle("cluster", options, build)


@dataclass(frozen=True)
class JudgeOptions:
    """What a judged analysis (`churn canary analyze`, `churn shadow analyze`) reads and where
    it pushes."""

    inference_log: Path
    judge: Any  # monitoring.judge.JudgeConfig
    pushgateway: Any | None  # monitoring.config.PushgatewaySettings; None: push nothing

    @classmethod
    def resolve(cls, inference_log: Path | None, judge_config: Path | None,
                pushgateway: str | None, no_push: bool) -> JudgeOptions:
        from kernel import paths
        from monitoring.config import MonitoringConfig
        from monitoring.judge import JudgeConfig

        logging_to_stderr()
        monitoring = MonitoringConfig.locate()
        if pushgateway:
            monitoring.pushgateway.url = pushgateway
        directory = inference_log or monitoring.inference_log_dir or paths.inference_log_dir()
        return cls(directory, JudgeConfig.locate(judge_config),
                   None if no_push else monitoring.pushgateway)
