"""`churn shadow start|stop|status|analyze`: a challenger scores live traffic beside the
champion without answering anyone, and is judged on the pairs (docs/shadow.md).

Exit codes as `churn canary`: 0 pass (or done), 1 fail, 3 inconclusive, 2 error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rollout.cli_options import ClusterOptions, cluster_command

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


def register(root: typer.Typer) -> None:
    """Add ``churn shadow ...`` to the root app."""
    root.add_typer(app, name="shadow")
