"""`churn generate | validate | train | models | promote`: thin wiring around training stages."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer

DEFAULT_CONTRACT_NAME = "streaming_churn.contract.yaml"
CONTRACT_HELP = ("Data contract YAML; default configs/streaming_churn.contract.yaml of the working "
                 "directory, else of the project.")

MLFLOW_URI_HELP = (
    "MLflow tracking URI: a shared server (http://host:5000, see `churn mlflow-server`) or a "
    "database URL; overrides mlflow_tracking_uri in the training config. Credentials come "
    "from MLFLOW_TRACKING_USERNAME/PASSWORD or PGPASSWORD/~/.pgpass, never the URL."
)

DATA_HELP = (
    "CSV or Parquet path, or a SQLAlchemy URL with a table or query after '#', "
    "e.g. sqlite:///.churn/data/customers.db#customers"
)


def _contract_path(contract: Path | None) -> Path:
    """``--contract``, else the default contract by the project's config rule."""
    from kernel.config_files import find_config

    return find_config(DEFAULT_CONTRACT_NAME, contract, required=True).announce().path


def _progress_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("alembic", "mlflow", "bentoml", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def generate(
    output: str = typer.Option(".churn/data/customers.csv", help="Where to write: .csv, "
                               ".parquet, or a SQLAlchemy URL '#table' (table is replaced)."),
    rows: int = typer.Option(10_000, min=10, help="Number of customers."),
    seed: int = typer.Option(42, help="Random seed (same seed, same data)."),
    churn_rate: float = typer.Option(0.15, help="Target share of churners."),
    drifted: bool = typer.Option(False, "--drifted", help="Generate the shifted population "
                                 "(lower engagement, price rise, a new region) for drift demos."),
    keep_churn_rate: bool = typer.Option(
        True, "--keep-churn-rate/--covariate-shift-only",
        help="With --drifted: re-fit the churn rate to --churn-rate (default, also a concept "
        "drift) or keep the undrifted relation between features and churn (pure covariate shift)."),
) -> None:
    """Write the embedded synthetic streaming-service customer table."""
    from kernel.ingest import mask_url, write_table
    from training.generate import GeneratorConfig, generate_customers

    frame = generate_customers(GeneratorConfig(rows=rows, seed=seed, churn_rate=churn_rate,
                                               drifted=drifted, keep_churn_rate=keep_churn_rate))
    write_table(frame, output)
    typer.echo(f"wrote {len(frame)} customers ({frame['churned'].mean():.1%} churn) to "
               f"{mask_url(output)}")


def validate(
    data: str = typer.Option(..., help=DATA_HELP),
    contract: Path | None = typer.Option(None, help=CONTRACT_HELP),
) -> None:
    """Check a table against its data contract; every broken rule is listed, exit 2 if any."""
    from kernel.contract import ContractViolation, DataContract, validate_training_data
    from kernel.ingest import read_table

    spec = DataContract.from_yaml(_contract_path(contract))
    frame = read_table(data)
    try:
        result = validate_training_data(frame, spec)
    except ContractViolation as exc:
        for problem in exc.problems:
            typer.echo(f"  - {problem}", err=True)
        raise
    typer.echo(
        f"ok: {len(frame)} rows keep contract {spec.name!r} "
        f"({result.target.mean():.1%} positive, {len(spec.features)} features)"
    )
    if result.ignored_columns:
        typer.echo(f"ignored (not in the contract): {', '.join(result.ignored_columns)}")


def train(
    data: str = typer.Option(
        ..., envvar="CHURN_TRAINING_DATA", help=DATA_HELP + ". A URL with a password belongs in "
        "the environment variable, not on the command line, where other users of the machine "
        "can read it."),
    contract: Path | None = typer.Option(None, help=CONTRACT_HELP),
    config: Path | None = typer.Option(
        None, help="Training config YAML; default configs/train.yaml of the working "
        "directory, else of the project, else built-in defaults (the first log line says "
        "which)."),
    summary: Path | None = typer.Option(None, help="Write a JSON summary here (roc_auc, pr_auc, "
                                        "precision, recall, threshold, model_tag, promoted...)."),
    budget: float | None = typer.Option(None, help="Override search_budget_seconds: the "
                                        "wall-clock cap on tuning (the trial budget scales "
                                        "with the table, trial_rows)."),
    mlflow_uri: str | None = typer.Option(None, "--mlflow-uri", help=MLFLOW_URI_HELP),
    sample_rows: int | None = typer.Option(
        None, "--sample-rows", min=100, help="For tables larger than memory: train on a "
        "stratified (by target) uniform sample of this many rows, drawn while the table "
        "streams in chunks; recorded in the summary. Overrides sample_rows in the config."),
) -> None:
    """Validate, train, evaluate on the held-out split, track in MLflow, save to the BentoML
    store and promote if the model beats the champion. Exit 2 on any failure (nothing saved)."""
    from kernel.contract import DataContract
    from training.config import TrainConfig
    from training.run import train_and_register

    _progress_logging()
    settings = TrainConfig.locate(config)
    spec = DataContract.from_yaml(_contract_path(contract))
    if budget is not None:
        settings = settings.model_copy(update={"search_budget_seconds": budget})
    if mlflow_uri:
        settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})
    if sample_rows is not None:
        settings = settings.model_copy(update={"sample_rows": sample_rows})
    from kernel.paths import churn_home, default_mlflow_uri
    from training import tracking

    home = churn_home()
    home.mkdir(parents=True, exist_ok=True)
    # Minutes of training must not end in an unreachable registry.
    tracking.check_reachable(settings.mlflow_tracking_uri or default_mlflow_uri())
    result = train_and_register(data, spec, settings, home.resolve())
    if summary:
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.write_text(result.model_dump_json(indent=2))
    typer.echo(
        f"{result.model_tag}: {result.stage} ({result.decision})\n"
        f"  {_candidate(result.algorithm, result.imbalance)}  roc_auc {result.roc_auc:.4f}  "
        f"pr_auc {result.pr_auc:.4f}  precision {result.precision:.3f}  "
        f"recall {result.recall:.3f}  brier {result.brier:.4f}  threshold {result.threshold:.3f}"
    )
    chosen = [row for row in result.selection if row.chosen]
    if chosen:
        typer.echo(f"  {_cost(result.scoring_cost)}  {chosen[0].reason}")
    if result.sample and result.sample.rows < result.sample.source_rows:
        typer.echo(f"  trained on {result.sample}")


def _cost(cost: object) -> str:
    """``ms/row 0.4100@1 0.0120@64``: scoring cost per row at batch 1 and the service's batch."""
    if cost is None:
        return "ms/row -"
    return f"ms/row {cost.ms_per_row_batch_1:.4f}@1 {cost.ms_per_row_batch:.4f}@{cost.batch_rows}"


def _candidate(algorithm: str, imbalance: str) -> str:
    """``xgboost+class_weight``; an ensemble of several algorithms is just ``ensemble``."""
    return algorithm if algorithm == "ensemble" else f"{algorithm}+{imbalance}"


def models(
    dataset: str | None = typer.Option(None, help="Only this dataset (contract name)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    registry: bool = typer.Option(
        False, "--registry", help="Also ask each model's MLflow registry whether its "
        "`champion` alias points at the model (imports MLflow: a few seconds)."),
    mlflow_uri: str | None = typer.Option(
        None, "--mlflow-uri", help="Ask this MLflow registry instead of the one each model "
        "was registered in (implies --registry), e.g. http://mlflow.internal:5000."),
) -> None:
    """List models in the store: tag, stage, algorithm, test metrics, scoring cost per row (at
    batch 1 and the service's batch, measured in training), decision, and the MLflow registry
    version (`@champion` when the registry's alias points at it, with --registry)."""
    from kernel.store import list_entries

    entries = list_entries(dataset)
    aliases = _mlflow_champions(entries, mlflow_uri) if registry or mlflow_uri else {}
    rows = []
    for e in entries:
        uri = mlflow_uri or e.metadata.mlflow_tracking_uri
        alias = aliases.get((uri, e.metadata.dataset), "unknown")
        rows.append({
            "tag": e.tag, "stage": e.stage, "algorithm": e.metadata.algorithm,
            "roc_auc": round(e.metadata.metrics.roc_auc, 4),
            "pr_auc": round(e.metadata.metrics.pr_auc, 4),
            "threshold": round(e.metadata.threshold, 4), "trained_at": e.metadata.trained_at,
            # None: trained before scoring cost was measured.
            "scoring_cost": cost.model_dump() if (cost := e.metadata.scoring_cost) else None,
            "decision": e.metadata.decision,
            "mlflow_version": e.metadata.mlflow_model_version,
            # The alias names a version *and* its run: a same-numbered version of another
            # registry is not this model. None: the registry was not (or could not be) asked.
            "mlflow_champion": None if alias == "unknown" else alias == (
                e.metadata.mlflow_model_version, e.metadata.mlflow_run_id),
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no churn models in the store yet: run `churn train`")
        return
    for e, r in zip(entries, rows, strict=True):
        mlflow_column = f"mlflow v{r['mlflow_version']}" if r["mlflow_version"] else "mlflow -"
        if r["mlflow_champion"]:
            mlflow_column += " @champion"
        cost = _cost(e.metadata.scoring_cost)
        typer.echo(f"{r['tag']:<40} {r['stage']:<10} {r['algorithm']:<13} "
                   f"roc_auc {r['roc_auc']:.4f}  pr_auc {r['pr_auc']:.4f}  {cost:<27} "
                   f"{r['trained_at']}  {mlflow_column}")


def _mlflow_champions(entries: list, override: str | None) -> dict:
    """{(tracking uri, dataset): (version, run id) of its champion alias, or None}; a registry
    that cannot be reached is left out, with one warning line."""
    from training import tracking

    wanted = {(override or e.metadata.mlflow_tracking_uri, e.metadata.dataset)
              for e in entries if override or e.metadata.mlflow_tracking_uri}
    found: dict = {}
    unreachable: set[str] = set()
    for uri, name in sorted(wanted):
        if uri in unreachable:
            continue
        try:
            tracking.check_reachable(uri)
            found[(uri, name)] = tracking.get_champion_version(uri, name)
        except Exception as exc:  # noqa: BLE001 - the listing still shows the store
            unreachable.add(uri)
            typer.echo(f"warning: MLflow registry not read ({' '.join(str(exc).split())[:200]})",
                       err=True)
    return found


def promote_cmd(
    tag: str = typer.Argument(..., help="Model tag name:version to make champion."),
    mlflow_uri: str | None = typer.Option(
        None, "--mlflow-uri", help="Registry whose `champion` alias follows (default: the one "
        "the model was registered in)."),
) -> None:
    """Make a model the champion by hand (e.g. after a contract change the gate cannot judge)."""
    from kernel.store import load_entry
    from training.promote import promote_champion

    entry = load_entry(tag)
    promote_champion(entry.tag, "promoted by hand with `churn promote`", mlflow_uri)
    typer.echo(f"{entry.tag} is now the champion of {entry.metadata.dataset}")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("validate")(validate)
    app.command("train")(train)
    app.command("models")(models)
    app.command("promote")(promote_cmd)
    from training.mlflow_server import mlflow_server

    app.command("mlflow-server")(mlflow_server)
