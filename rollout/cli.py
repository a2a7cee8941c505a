"""`churn canary start|status|analyze|promote|abort|run|render`: thin wrappers that read
configs/canary.yaml, call ``rollout.canary`` / ``rollout.measure`` and print what happened.

Exit codes: 0 pass (or done), 1 fail (analysis failed, run aborted, promotion rolled back),
3 inconclusive (too little traffic, no data), 2 error (kubectl, Prometheus, bad config).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from rollout.cli_options import (
    ClusterOptions,
    ConfigOption,
    ContextOption,
    InferenceLogOption,
    JsonOption,
    JudgeConfigOption,
    JudgeOptions,
    KubectlOption,
    NoPushOption,
    PrometheusOption,
    PushgatewayOption,
    cluster_command,
    load_config,
)

RULES_PATH = Path("monitoring/prometheus/rules.yml")
TEMPLATE_PATH = Path("k8s/overlays/argo-rollouts/analysistemplate.yaml")

app = typer.Typer(
    no_args_is_help=True,
    help="Canary rollout of a new model or image with kubectl, judged by comparing canary and "
    "stable in Prometheus (errors, latency and what the two models predict). docs/canary.md.",
)

WindowOption = Annotated[str | None, typer.Option(
    "--window", help="Compare the last period (90s, 10m, 1h); default analysis.window.")]
REASON_HELP = "Why, for the record (annotation on the canary and the decision log)."


@app.command()
@cluster_command()
def start(
    model: Annotated[str | None, typer.Option(
        "--model", help="Model store tag name:version the canary serves (stable keeps its "
        "own).")] = None,
    image: Annotated[str | None, typer.Option(
        "--image", help="Image the canary runs; default: stable's image.")] = None,
    weight: Annotated[int | None, typer.Option(
        "--weight", min=1, max=99, help="Canary share of ready pods, %; default the first "
        "run step.")] = None,
    *,
    cluster: ClusterOptions,
) -> None:
    """Start a canary: the canary Deployment serves --model and/or --image (the rest as
    stable), is scaled to the first step's share of pods and waited for."""
    label = cluster.canary().start(model, image, weight)
    typer.echo(f"canary started at {label}; next: churn canary analyze")


@app.command()
@cluster_command(edits=False)
def status(*, cluster: ClusterOptions) -> None:
    """What stable and canary serve, how many pods are ready, the traffic share and the last
    recorded decision."""
    typer.echo(cluster.canary().status())


@app.command()
def analyze(
    prometheus: PrometheusOption = None,
    window: WindowOption = None,
    step: Annotated[int, typer.Option(
        "--step", min=1, help="Which rollout step this analysis judges (1 = the first): each "
        "step is a separate sample with its share of the false-failure budget "
        "(configs/judge.yaml unpaired.planned_samples). Analyses of one step repeat freely.")
    ] = 1,
    wait: Annotated[bool, typer.Option(
        "--wait", help="While inconclusive, analyse again every minute, for at most "
        "analysis.wait; then exit as the last analysis says (the Argo Rollouts job).")] = False,
    as_json: JsonOption = False,
    inference_log: InferenceLogOption = None,
    judge_config: JudgeConfigOption = None,
    pushgateway: PushgatewayOption = None,
    no_push: NoPushOption = False,
    config: ConfigOption = None,
) -> None:
    """Judge the canary against stable on what each serves now: predictions from the
    inference log, requests, failures and latency from Prometheus (docs/judge.md). Prints the
    table, pushes the judgement. Exit 0 pass, 1 fail, 3 inconclusive (too little data: never
    a pass), 2 error."""
    from rollout.config import duration_seconds
    from rollout.measure import measure, push, table

    settings = load_config(config, prometheus=prometheus)
    if window:
        duration_seconds(window)  # a bad window is an error before any query
    options = JudgeOptions.resolve(inference_log, judge_config, pushgateway, no_push)
    deadline = time.monotonic() + (duration_seconds(settings.analysis.wait) if wait else 0)
    while True:
        report = measure(settings.prometheus_url, settings.analysis, options.inference_log,
                         options.judge, window, sample=step)
        if report.verdict != "inconclusive" or time.monotonic() + 60 > deadline:
            break
        typer.echo(f"inconclusive ({report.summary()}); again in 60 s", err=True)
        time.sleep(60)
    if options.pushgateway is not None:
        push(report, options.pushgateway)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else table(report))
    raise typer.Exit(report.exit_code)


@app.command()
@cluster_command()
def promote(
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP)] = "promoted by hand",
    *,
    cluster: ClusterOptions,
) -> None:
    """Stable takes the canary's model and image (one rollout of stable, waited for), then the
    canary is scaled to zero. If stable does not roll out it is rolled back (exit 1)."""
    from rollout.canary import PromotionFailed

    try:
        summary = cluster.canary().promote(reason)
    except PromotionFailed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"promoted: {summary}")
    typer.echo("Record it where the manifests live (the next `kubectl apply -k` would undo it): "
               "docs/canary.md#after-a-promotion")


@app.command()
@cluster_command()
def abort(
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP)] = "aborted by hand",
    *,
    cluster: ClusterOptions,
) -> None:
    """Scale the canary to zero (all traffic back on stable) and record why."""
    cluster.canary().abort(reason)
    typer.echo("canary aborted: stable serves all traffic")


@app.command()
@cluster_command(prometheus=True)
def run(
    model: Annotated[str | None, typer.Option(
        "--model", help="Model store tag name:version the canary serves.")] = None,
    image: Annotated[str | None, typer.Option(
        "--image", help="Image the canary runs; default: stable's image.")] = None,
    *,
    cluster: ClusterOptions,
) -> None:
    """The whole canary: start, then each step of run.steps (default 5 -> 25 -> 50 -> 100%)
    with a pause and an analysis; abort on a failed (or lastingly inconclusive) analysis,
    promote at 100%. Exit 0 promoted, 1 failed, 3 inconclusive."""
    from rollout.measure import Report, measure, push, table

    settings, canary = cluster.config, cluster.canary()
    options = None if cluster.dry_run else JudgeOptions.resolve(None, None, None, False)

    def analyze(step: int) -> Report:
        if cluster.dry_run:
            typer.echo(f"(dry run) churn canary analyze --step {step} --prometheus "
                       f"{settings.prometheus_url} (assumed to pass)")
            return Report(settings.analysis.window, _utc_now(), None)
        report = measure(settings.prometheus_url, settings.analysis, options.inference_log,
                         options.judge, sample=step)
        push(report, options.pushgateway)
        return report

    def show(report: Report) -> None:
        if report.judgement is not None or report.problems():
            typer.echo(table(report))

    raise typer.Exit(canary.run(model, image, analyze, time.sleep, show))


@app.command()
def render(
    check: Annotated[bool, typer.Option(
        "--check", help="Only compare: exit 1 if a rendered copy is out of date.")] = False,
    stdout: Annotated[str | None, typer.Option(
        "--stdout", help="Print one rendering instead of writing: 'argo' (AnalysisTemplate) or "
        "'rules' (the Prometheus rules group).")] = None,
    rules: Annotated[Path | None, typer.Option(
        "--rules", help=f"rules.yml whose generated group is rewritten; default the project's "
        f"{RULES_PATH}.")] = None,
    template: Annotated[Path | None, typer.Option(
        "--template", help=f"Where the Argo AnalysisTemplate is written; default the "
        f"project's {TEMPLATE_PATH}.")] = None,
    config: ConfigOption = None,
) -> None:
    """Render the analysis for Argo Rollouts (AnalysisTemplate) and for Prometheus (the
    ChurnCanaryAnalysisFailing rules), from rollout/analysis.py and the config."""
    from kernel.config_files import project_root
    from rollout.render import analysis_template, dump, replace_generated, rules_group_text

    settings = load_config(config)
    rules = rules or project_root() / RULES_PATH
    template = template or project_root() / TEMPLATE_PATH
    template_text = ("# Generated by `churn canary render` from rollout/analysis.py and "
                     "configs/canary.yaml:\n# the queries and conditions of `churn canary "
                     "analyze`. Do not edit.\n" + dump(analysis_template(settings)))
    if stdout == "argo":
        typer.echo(template_text, nl=False)
        return
    if stdout == "rules":
        typer.echo(rules_group_text(settings), nl=False)
        return
    if stdout is not None:
        raise typer.BadParameter("--stdout takes 'argo' or 'rules'")
    wanted = {rules: replace_generated(rules.read_text(), rules_group_text(settings)),
              template: template_text}
    stale = [path for path, text in wanted.items()
             if not path.exists() or path.read_text() != text]
    if check:
        for path in stale:
            typer.echo(f"out of date: {path} (run churn canary render)", err=True)
        raise typer.Exit(1 if stale else 0)
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted[path])
        typer.echo(f"wrote {path}")
    if not stale:
        typer.echo("up to date")


def _utc_now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def k8s_check(
    overlay: Annotated[list[Path] | None, typer.Option(
        "--overlay", help="Kustomization to check the cluster for (repeat for several): an "
        "overlay, or your own folder listing components; default k8s/overlays/prod. Its "
        "rendering says what is needed (CRDs, storage classes, Secrets...).")] = None,
    context: ContextOption = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Namespace the overlay is applied to; default the one the "
        "overlay sets, else kubernetes.namespace from the config, else `default`.")] = None,
    images: Annotated[bool, typer.Option(
        "--images", help="Also prove the nodes can pull every image: one short-lived pod per "
        "image in the namespace (which must exist), deleted after. Off by default: it creates "
        "pods and takes up to 3 minutes.")] = False,
    kubectl: KubectlOption = None,
    config: ConfigOption = None,
) -> None:
    """Check, before the first apply, that the cluster has what each overlay needs: one row per
    prerequisite (Kubernetes version, CRDs, storage classes and volume ownership,
    metrics-server, the namespace's Pod Security labels, Prometheus selecting the monitoring
    objects, Secrets, permissions of `churn canary`...), a fix under each failed row. Changes
    nothing (but --images). Exit 0 when every row passes (warnings allowed), 1 when one fails,
    2 when the overlay cannot be rendered or kubectl cannot run."""
    import yaml

    from kernel.config_files import project_root
    from monitoring.k8s_render import kustomize
    from rollout.kubectl import Kubectl
    from rollout.preflight import FAIL, check, table

    settings = load_config(config, kubectl, context).kubernetes
    where = f"context {settings.context}" if settings.context else "the current context"
    failed = False
    for path in overlay or [project_root() / "k8s" / "overlays" / "prod"]:
        objects = [o for o in yaml.safe_load_all(kustomize(path, settings.kubectl)) if o]
        runner = Kubectl(settings.model_copy(update={"namespace": namespace}))
        rows = check(objects, runner, images=images, canary_deployment=settings.canary,
                     fallback_namespace=settings.namespace or "default")
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        typer.echo(f"{shown} on {where}, namespace {runner.settings.namespace}:\n"
                   f"{table(rows)}\n")
        failed |= any(row.status == FAIL for row in rows)
    if failed:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    """Add ``churn canary ...`` to the root app, and ``churn k8s check`` to the k8s sub-app
    (monitoring.k8s_assets: the k8s/ commands; the preflight drives kubectl, as the canary
    does)."""
    from monitoring.k8s_assets import k8s_app

    root.add_typer(app, name="canary")
    k8s_app.command("check")(k8s_check)
