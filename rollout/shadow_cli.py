"""`churn shadow start|stop|status|analyze`: a challenger scores live traffic beside the
champion without answering anyone, and is judged on the pairs (docs/shadow.md).

Exit codes as `churn canary`: 0 pass (or done), 1 fail, 3 inconclusive, 2 error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rollout.cli_options import (
    ClusterOptions,
    InferenceLogOption,
    JsonOption,
    JudgeConfigOption,
    JudgeOptions,
    NoPushOption,
    PushgatewayOption,
    cluster_command,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Shadow scoring: stable's pods also score a challenger (never answering with it); "
    "`analyze` judges the paired predictions from the inference log. docs/shadow.md.",
)
REASON_HELP = "Why, for the record (annotation on stable and the decision log)."


@app.command()
@cluster_command()
def start(
    model: Annotated[str, typer.Option(
        "--model", help="Model store tag name:version of the challenger to shadow.")],
    *,
    cluster: ClusterOptions,
) -> None:
    """Stable's pods load --model as their shadow (written to the model ConfigMap's
    CHURN_SHADOW_MODEL_TAG key; the pods restart once). No answer changes."""
    summary = cluster.shadow().start(model)
    typer.echo(f"shadow started: {summary}; next: churn shadow analyze")


@app.command()
@cluster_command()
def stop(
    reason: Annotated[str, typer.Option("--reason", help=REASON_HELP)] = "stopped by hand",
    *,
    cluster: ClusterOptions,
) -> None:
    """Stable's pods drop their shadow (the key is emptied; the pods restart once)."""
    cluster.shadow().stop(reason)
    typer.echo("shadow stopped")


@app.command()
@cluster_command(edits=False)
def status(*, cluster: ClusterOptions) -> None:
    """What stable serves, which shadow its pods score, and the last recorded decision."""
    typer.echo(cluster.shadow().status())


@app.command()
def analyze(
    since: Annotated[str | None, typer.Option(
        "--since", help="Judge the pairs logged since this time (ISO 8601, e.g. "
        "2026-12-03T09:00:00Z): when the shadow started. Default: --window.")] = None,
    window: Annotated[str, typer.Option(
        "--window", help="Without --since: the pairs of this last period (30m, 6h, 1d).")
    ] = "24h",
    shadow: Annotated[str | None, typer.Option(
        "--shadow", help="The shadow's model version to judge; default the one that scored "
        "most of the window.")] = None,
    labels: Annotated[str | None, typer.Option(
        "--labels", envvar="CHURN_LABELS", help="Late ground truth (CSV/Parquet/SQL with the "
        "contract's id and target columns and observed_at, as `churn performance` reads it): "
        "adds the ROC-AUC of both models on the same customers.")] = None,
    as_json: JsonOption = False,
    inference_log: InferenceLogOption = None,
    judge_config: JudgeConfigOption = None,
    pushgateway: PushgatewayOption = None,
    no_push: NoPushOption = False,
) -> None:
    """Judge the shadow against the champion on the customers both scored (the inference
    log's pairs; docs/judge.md): prints the table, pushes the judgement. Exit 0 pass, 1 fail,
    3 inconclusive (too few pairs: never a pass), 2 error."""
    import json
    import time
    from datetime import UTC, datetime

    from monitoring.config import parse_window
    from monitoring.judge import SHADOW_JOB, judge_paired, judgement_registry
    from monitoring.judge_inputs import shadow_evidence, with_labels

    options = JudgeOptions.resolve(inference_log, judge_config, pushgateway, no_push)
    start = (datetime.fromisoformat(since.replace("Z", "+00:00")) if since
             else datetime.now(UTC) - parse_window(window))
    evidence = shadow_evidence(options.inference_log, since=start, shadow_version=shadow)
    pairs, contract, segments = evidence.pairs, evidence.contract, evidence.segments
    frame = pairs.frame
    if labels and contract is not None and contract.id is not None:
        from kernel.ingest import read_table

        frame = with_labels(frame, read_table(labels), contract.id, contract.target.column)
    judgement = judge_paired(frame, options.judge, segments=segments,
                             label="label" if "label" in frame.columns else None)
    head = (f"shadow {pairs.shadow_version} beside champion {pairs.champion_version}: "
            f"{len(pairs.frame):,} pairs since {start.isoformat(timespec='seconds')} "
            f"({pairs.skipped:,} predictions the shadow skipped)")
    if as_json:
        typer.echo(json.dumps({"shadow_version": pairs.shadow_version,
                               "champion_version": pairs.champion_version,
                               "pairs": len(pairs.frame), "skipped": pairs.skipped,
                               "since": start.isoformat(), "judgement": judgement.to_dict()},
                              indent=2, default=str))
    else:
        typer.echo(f"{head}\n\n{judgement.table()}")
    # After the table: a Pushgateway that is down leaves the verdict readable.
    if options.pushgateway is not None:
        from monitoring.push import push_metrics

        push_metrics(judgement_registry(judgement, time.time(),
                                        {"champion_version": pairs.champion_version}),
                     SHADOW_JOB, pairs.shadow_version, options.pushgateway)
    raise typer.Exit(judgement.exit_code)


def register(root: typer.Typer) -> None:
    """Add ``churn shadow ...`` to the root app."""
    root.add_typer(app, name="shadow")
