"""`churn lifecycle status|step|run|approve|reject|pause|resume`: drift -> retrain -> challenger
-> shadow -> canary -> approval -> promoted, one step at a time (docs/lifecycle.md).

Exit codes: 0 done (or waiting: nothing to do yet), 1 the step rejected a challenger, 2 error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from rollout.cli_options import (
    ClusterOptions,
    InferenceLogOption,
    JudgeConfigOption,
    NoPushOption,
    PushgatewayOption,
    cluster_command,
    option_bundle,
)

app = typer.Typer(
    no_args_is_help=True,
    help="The model lifecycle: retrain on drift, register a gated challenger, judge it in "
    "shadow, then as a canary, and promote it after one approval. docs/lifecycle.md.",
)
LifecycleConfigOption = Annotated[Path | None, typer.Option(
    "--lifecycle-config", help="Lifecycle config YAML; default configs/lifecycle.yaml by the "
    "project's rule, else built-in defaults.")]
StateOption = Annotated[str | None, typer.Option(
    "--state", help="Where the state lives: file ($CHURN_HOME/lifecycle/state.json) or "
    "configmap (in the cluster); default `state` of the lifecycle config.")]
MonitoringConfigOption = Annotated[Path | None, typer.Option(
    "--monitoring-config", help="Monitoring config YAML for the retrain check (as `churn "
    "retrain-check --config`); default configs/monitoring.yaml by the project's rule.")]
TrainConfigOption = Annotated[Path | None, typer.Option(
    "--train-config", help="Training config YAML for the challenger (as `churn train "
    "--config`); default configs/train.yaml by the project's rule.")]
REASON_HELP = "Why, for the record (the transition and the decision log)."


@dataclass(frozen=True)
class LoopOptions:
    """What the commands that run the loop (`step`, `run`) read, and where they push; the
    others take the few they need."""

    lifecycle_config: Path | None = None
    state: str | None = None
    inference_log: Path | None = None
    judge_config: Path | None = None
    pushgateway: str | None = None
    no_push: bool = True  # what `status` gets: it never pushes (the loop commands' --no-push
    # defaults to False)
    monitoring_config: Path | None = None
    train_config: Path | None = None


loop_command = option_bundle("loop", {
    "inference_log": (InferenceLogOption, None), "judge_config": (JudgeConfigOption, None),
    "pushgateway": (PushgatewayOption, None), "no_push": (NoPushOption, False),
    "lifecycle_config": (LifecycleConfigOption, None),
    "monitoring_config": (MonitoringConfigOption, None),
    "train_config": (TrainConfigOption, None), "state": (StateOption, None),
}, lambda values: LoopOptions(**values))


def _lifecycle(cluster, options: LoopOptions, local: bool = False):
    """The engine wired to this cluster (``cluster``: the shared options' ClusterOptions) or
    to local servers, its store and its world."""
    from kernel.paths import churn_home, report_dir
    from rollout.cli_options import JudgeOptions
    from rollout.kubectl import Kubectl
    from rollout.lifecycle.engine import Lifecycle
    from rollout.lifecycle.platform import KubernetesPlatform
    from rollout.lifecycle.state import (
        ConfigMapStateStore,
        FileStateStore,
        LifecycleConfig,
        LifecycleError,
        TransitionArchive,
    )

    settings = LifecycleConfig.locate(options.lifecycle_config)
    if options.state:
        settings = settings.model_copy(update={"state": options.state})
    canary_config = cluster.config
    judge = JudgeOptions.resolve(options.inference_log, options.judge_config,
                                 options.pushgateway, options.no_push)
    analysed = [weight for weight in canary_config.run.steps if weight < 100]
    if judge.judge.unpaired.planned_samples < len(analysed):
        raise LifecycleError(
            f"the canary judges {len(analysed)} steps ({analysed}) but the judge config plans "
            f"{judge.judge.unpaired.planned_samples} samples: set unpaired.planned_samples to "
            f"{len(analysed)} (its false-failure budget is split over them)")
    store = (ConfigMapStateStore(Kubectl(canary_config.kubernetes, echo=typer.echo),
                                 settings.configmap_name)
             if settings.state == "configmap"
             else FileStateStore(churn_home() / "lifecycle" / "state.json"))
    platform = (_local_platform() if local
                else KubernetesPlatform(cluster.canary(), cluster.shadow()))
    world = _world(settings, canary_config, judge, options.monitoring_config,
                   options.train_config)
    return Lifecycle(settings, store, world, platform, canary_config.run.steps,
                     on_change=lambda saved: _push_state(saved, judge),
                     archive=TransitionArchive(report_dir() / "lifecycle" / "transitions.jsonl"))


def _world(settings, canary_config, judge, monitoring_config=None, train_config=None):
    from kernel.paths import churn_home
    from rollout.lifecycle.world import ChurnWorld

    return ChurnWorld(settings, churn_home().resolve(),
                      retrain_check=lambda: _retrain_check(monitoring_config),
                      train_config_path=train_config,
                      judge_shadow_with=lambda state: _judge_shadow(state, judge),
                      judge_canary_with=lambda state: _judge_canary(state, canary_config,
                                                                    judge))


def _retrain_check(monitoring_config: Path | None = None):
    """`churn retrain-check` (without pushing: its CronJob pushes): fail = retrain."""
    from kernel import paths
    from monitoring.config import MonitoringConfig
    from monitoring.jobs import retrain_check_job
    from rollout.lifecycle.engine import Judged

    settings = MonitoringConfig.locate(monitoring_config)
    outcome = retrain_check_job(settings, report_dir=settings.report_dir or paths.report_dir(),
                                push=False)
    verdict = "fail" if outcome.exit_code == 10 else "pass"
    return Judged(verdict, "; ".join(outcome.lines) or f"exit {outcome.exit_code}",
                  {"exit_code": outcome.exit_code})


def _judge_shadow(state, judge):
    """`churn shadow analyze` since the shadow started, for the challenger's version."""
    from datetime import datetime

    from kernel.store import load_entry
    from monitoring.judge import judge_paired
    from monitoring.judge_inputs import shadow_evidence
    from rollout.lifecycle.engine import Judged

    challenger = load_entry(state.challenger)
    champion = load_entry(state.champion) if state.champion else None
    try:
        evidence = shadow_evidence(
            judge.inference_log, since=datetime.fromisoformat(state.entered_at),
            shadow_version=challenger.version,
            champion_version=champion.version if champion else None)
    except LookupError as exc:
        return Judged("inconclusive", str(exc))
    judgement = judge_paired(evidence.pairs.frame, judge.judge, segments=evidence.segments,
                             label=None)
    return Judged(judgement.verdict, judgement.summary(), judgement.to_dict())


def _judge_canary(state, canary_config, judge):
    """`churn canary analyze --step N` for the canary step the lifecycle is at."""
    from rollout.lifecycle.engine import Judged
    from rollout.measure import measure, push

    report = measure(canary_config.prometheus_url, canary_config.analysis, judge.inference_log,
                     judge.judge, sample=state.canary_step + 1)
    if judge.pushgateway is not None:
        push(report, judge.pushgateway)
    return Judged(report.verdict, report.summary(), report.to_dict())


def _push_state(state, judge) -> None:
    """``churn_lifecycle_phase{phase}`` (one per phase, 1 for the current one) and
    ``churn_lifecycle_state`` (the phase's number), with the champion and challenger."""
    if judge.pushgateway is None:
        return
    from prometheus_client import CollectorRegistry, Gauge

    from monitoring.push import push_metrics
    from rollout.lifecycle.state import PHASE_CODES, Phase

    registry = CollectorRegistry()
    labels = {"champion": state.champion or "", "challenger": state.challenger or ""}
    phase = Gauge("churn_lifecycle_phase", "1 for the lifecycle's current phase",
                  ["phase", *labels], registry=registry)
    for each in Phase:
        phase.labels(phase=each.value, **labels).set(float(each is state.phase))
    Gauge("churn_lifecycle_state", "the lifecycle's phase as a number (0 idle .. 7 rejected)",
          list(labels), registry=registry).labels(**labels).set(PHASE_CODES[state.phase])
    Gauge("churn_lifecycle_cycle", "retraining cycles so far", registry=registry).set(
        state.cycle)
    Gauge("churn_lifecycle_paused", "1 while paused", registry=registry).set(
        float(state.paused))
    try:
        push_metrics(registry, "churn_lifecycle", "lifecycle", judge.pushgateway)
    except Exception as exc:  # noqa: BLE001 - a transition stands even if its gauge is late
        typer.echo(f"warning: could not push the lifecycle state: {exc}", err=True)


def _local_platform():
    from kernel.config_files import find_config
    from kernel.paths import churn_home
    from kernel.store import resolve_entry
    from rollout.lifecycle.platform import LocalPlatform, LocalServer

    home = churn_home()
    config = find_config("service.yaml").path
    return LocalPlatform(
        LocalServer("stable", _port("CHURN_STABLE_PORT", 3000), home / "lifecycle" / "stable",
                    config),
        LocalServer("canary", _port("CHURN_CANARY_PORT", 3002), home / "lifecycle" / "canary",
                    config),
        champion_tag=resolve_entry().tag)


def _port(variable: str, default: int) -> int:
    import os

    return int(os.environ.get(variable, default))


def _show(outcome) -> None:
    for moved in outcome.moved:
        typer.echo(f"moved: {moved}")
    state = outcome.state
    last = state.history[-1] if state.history else None
    typer.echo(f"lifecycle: {state.phase.value}" + (f" (cycle {state.cycle}, challenger "
                                                      f"{state.challenger})" if state.cycle
                                                      else ""))
    if last:
        typer.echo(f"last transition: {last.source.value} -> {last.target.value} at {last.at}: "
                   f"{last.reason}")
    if outcome.waiting:
        typer.echo(outcome.waiting)


@app.command()
@cluster_command(edits=False)
def status(
    as_json: Annotated[bool, typer.Option("--json", help="The whole state, history "
                                          "included, as JSON.")] = False,
    lifecycle_config: LifecycleConfigOption = None,
    state: StateOption = None,
    *,
    cluster: ClusterOptions,
) -> None:
    """Where the lifecycle is, the challenger, and every transition with its reason."""
    lifecycle = _lifecycle(cluster, LoopOptions(lifecycle_config, state))
    current = lifecycle.status()
    if as_json:
        typer.echo(current.model_dump_json(by_alias=True, indent=2))
        return
    paused = f" (paused: {current.paused_reason})" if current.paused else ""
    typer.echo(f"lifecycle: {current.phase.value}{paused}")
    typer.echo(f"champion {current.champion or '-'}, challenger {current.challenger or '-'}, "
               f"cycle {current.cycle}, state in {lifecycle.store.where}")
    if current.intent:
        typer.echo(f"in progress: {current.intent.action} by {current.intent.owner} since "
                   f"{current.intent.started_at} (lease until {current.intent.lease_until})")
    for transition in current.history[-12:]:
        typer.echo(f"  {transition.at}  {transition.source.value} -> "
                   f"{transition.target.value}: {transition.reason}")


@app.command()
@cluster_command(edits=False, prometheus=True)
@loop_command
def step(*, cluster: ClusterOptions, loop: LoopOptions) -> None:
    """Advance as far as the lifecycle can without waiting (what the CronJob runs every 15
    minutes): at most one judgement per phase, every transition recorded. A second step while
    one works does nothing. Exit 1 when this step rejected a challenger."""
    outcome = _lifecycle(cluster, loop).step()
    _show(outcome)
    if any(move.endswith("-> rejected") for move in outcome.moved):
        raise typer.Exit(1)


@app.command()
@cluster_command(edits=False, prometheus=True)
@loop_command
def run(
    every: Annotated[float, typer.Option(
        "--every", min=1, help="Seconds between steps (the CronJob's 15 minutes is 900).")
    ] = 60,
    local: Annotated[bool, typer.Option(
        "--local", help="Serve locally instead of a cluster: stable on $CHURN_STABLE_PORT "
        "(3000), the canary on $CHURN_CANARY_PORT (3002), restarted as the loop needs, as "
        "the drill does; split your traffic between them yourself.")] = False,
    *,
    cluster: ClusterOptions,
    loop: LoopOptions,
) -> None:
    """Step every --every seconds until stopped (Ctrl-C)."""
    lifecycle = _lifecycle(cluster, loop, local=local)
    if local:
        lifecycle.platform.start()
    try:
        while True:
            _show(lifecycle.step())
            time.sleep(every)
    finally:
        if local:
            lifecycle.platform.stable.stop()
            lifecycle.platform.canary.stop()


def _decide(action: str):
    @cluster_command(edits=False)
    def command(
        reason: Annotated[str, typer.Option("--reason", help=REASON_HELP)] = f"{action} by hand",
        lifecycle_config: LifecycleConfigOption = None,
        state: StateOption = None,
        pushgateway: PushgatewayOption = None,
        no_push: NoPushOption = False,
        *,
        cluster: ClusterOptions,
    ) -> None:
        lifecycle = _lifecycle(cluster, LoopOptions(lifecycle_config, state,
                                                    pushgateway=pushgateway, no_push=no_push))
        saved = getattr(lifecycle, action)(reason)
        typer.echo(json.dumps({"phase": saved.phase.value, "challenger": saved.challenger,
                               "champion": saved.champion, "paused": saved.paused}))

    return command


app.command("approve", help="Promote the challenger awaiting approval: stable takes it (the "
            "canary's promotion), the store's champion label and MLflow alias move.")(
    _decide("approve"))
app.command("reject", help="Take the challenger out (shadow stopped or canary aborted) and "
            "record why.")(_decide("reject"))
app.command("pause", help="Stop stepping until resumed (a step in progress finishes).")(
    _decide("pause"))
app.command("resume", help="Step again.")(_decide("resume"))


def register(root: typer.Typer) -> None:
    """Add ``churn lifecycle ...`` to the root app."""
    root.add_typer(app, name="lifecycle")
