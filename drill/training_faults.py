"""Failures that reach training: the upstream table changes shape, a column leaks the outcome,
the labels collapse, a challenger is worse. Each runs the real `churn train` (or the training
job itself) against the drill's model store, and checks the refusal, its message, and that
neither the store nor the MLflow registry changed."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import yaml

from drill.scenario import Finding, Scenario
from drill.system import DrillSystem, StoreState


def _train(system: DrillSystem, data: Path, contract: Path) -> tuple[int, str, float]:
    """`churn train` as a CronJob runs it: (exit code, its `error:` line, seconds)."""
    started = time.monotonic()
    done = system.churn("train", "--data", str(data), "--contract", str(contract),
                        "--config", str(system.train_config_file()))
    seconds = time.monotonic() - started
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return done.returncode, errors[-1] if errors else done.stderr.strip()[-300:], seconds


def _unchanged(finding: Finding, before: StoreState, after: StoreState) -> None:
    finding.intact("champion untouched (store label)", after.champion == before.champion,
                   f"before {before.champion}, after {after.champion}")
    finding.intact("no model registered in the store", after.stages == before.stages,
                   f"{len(before.stages)} entries before, {len(after.stages)} after")
    finding.intact("no model version registered in MLflow",
                   after.mlflow_versions == before.mlflow_versions,
                   f"versions before {list(before.mlflow_versions)}, "
                   f"after {list(after.mlflow_versions)}")
    finding.intact("MLflow champion alias untouched",
                   after.mlflow_champion == before.mlflow_champion,
                   f"before v{before.mlflow_champion}, after v{after.mlflow_champion}")


def schema_change(system: DrillSystem, finding: Finding) -> None:
    champion = system.champion()
    contract = system.contract()
    base = system.customers(system.settings.training.rows, system.settings.training.seed + 1)
    renamed = base.rename(columns={"monthly_charge": "monthly_fee"})
    retyped = base.copy()  # billing now exports money as text with a currency sign
    retyped["monthly_charge"] = "$" + retyped["monthly_charge"].map("{:.2f}".format)
    widened = base.copy()  # a new plan launched upstream; the contract's set is closed
    family = np.random.default_rng(1).random(len(widened)) < 0.08
    widened.loc[family, "plan"] = "family"
    variants = {
        "renamed column": (renamed, "monthly_charge",
                           f"{len(base)} rows missing: declared feature not in the data"),
        "changed dtype": (retyped, "monthly_charge", f"{len(base)} rows not numeric"),
        "category added": (widened, "plan",
                           f"{int(family.sum())} rows outside the allowed values"),
    }
    contract_path = system.path(system.settings.project.contract)
    before = system.store_state(contract.name)
    finding.injected()
    for label, (frame, column, rule) in variants.items():
        data = system.write_table(frame, f"schema-{label.replace(' ', '-')}.csv")
        code, line, seconds = _train(system, data, contract_path)
        finding.took(seconds)
        finding.note(label, {"exit_code": code, "error": line, "seconds": round(seconds, 2)})
        finding.caught(f"{label}: `churn train` exits 2", code == 2, f"exit {code}")
        finding.caught(f'{label}: the error names column "{column}", the rule and the rows',
                       "ContractViolation" in line and f'column "{column}": {rule}' in line,
                       line)
    _unchanged(finding, before, system.store_state(contract.name))
    finding.note("champion", champion.tag)


def leakage(system: DrillSystem, finding: Finding) -> None:
    system.champion()
    contract = system.contract()
    frame = system.customers(system.settings.training.rows, system.settings.training.seed + 2)
    rng = np.random.default_rng(2)
    # Written by the cancellation flow, so known only once the customer has left; 3% noise.
    leaked = np.where(frame["churned"] == 1, "pending_cancellation", "active")
    noise = rng.random(len(frame)) < 0.03
    leaked[noise] = rng.choice(["active", "pending_cancellation"], int(noise.sum()))
    frame["account_status"] = leaked

    # Undeclared, the new column never reaches a model: the contract lists what is a feature.
    from kernel.contract import validate_training_data

    ignored = validate_training_data(frame, contract).ignored_columns
    finding.caught("undeclared, the leaking column is ignored (not a feature)",
                   "account_status" in ignored, f"ignored columns: {ignored}")

    # Declared by a contract revision ("a great new feature"), training must refuse it.
    raw = yaml.safe_load(contract.to_yaml())
    raw["features"]["account_status"] = {"type": "categorical",
                                         "description": "account state from the CRM"}
    revised = system.workdir / "contract-with-account-status.yaml"
    revised.write_text(yaml.safe_dump(raw, sort_keys=False))
    data = system.write_table(frame, "leaking-column.csv")
    before = system.store_state(contract.name)
    finding.injected()
    code, line, seconds = _train(system, data, revised)
    finding.took(seconds)
    finding.note("exit_code", code)
    finding.note("error", line)
    finding.note("leakage_action", system.train_config().leakage_action)
    finding.caught("`churn train` exits 2", code == 2, f"exit {code}")
    finding.caught('the refusal names "account_status" and its single-feature ROC-AUC',
                   "LeakageSuspected" in line and '"account_status"' in line
                   and "ROC-AUC" in line, line)
    _unchanged(finding, before, system.store_state(contract.name))


def label_collapse(system: DrillSystem, finding: Finding) -> None:
    system.champion()
    contract = system.contract()
    rows = 8000  # enough rows that min_positives positives are still a near-zero rate
    frame = system.customers(rows, system.settings.training.seed + 3)
    # The label job broke: only min_positives churners left (0.25% with the defaults).
    positives = np.flatnonzero(frame[contract.target.column].to_numpy() == 1)
    keep = positives[:contract.min_positives]
    frame[contract.target.column] = 0
    frame.loc[frame.index[keep], contract.target.column] = 1
    data = system.write_table(frame, "collapsed-labels.csv")
    before = system.store_state(contract.name)
    finding.injected()
    code, line, seconds = _train(system, data, system.path(system.settings.project.contract))
    finding.took(seconds)
    finding.note("positive_rate", round(len(keep) / rows, 4))
    finding.note("exit_code", code)
    finding.note("error", line)
    finding.caught("`churn train` exits 2", code == 2, f"exit {code}")
    finding.caught(f'the reason names "{contract.target.column}" and the collapsed rate',
                   f'column "{contract.target.column}"' in line
                   and "min_positive_rate" in line and "collapsed" in line, line)
    _unchanged(finding, before, system.store_state(contract.name))


def worse_challenger(system: DrillSystem, finding: Finding) -> None:
    from kernel.store import load_entry, resolve_entry

    champion = system.champion()
    service = system.champion_service()
    served_before = service.readyz()
    before = system.store_state(champion.metadata.dataset)
    finding.injected()
    summary = system.worse_challenger()
    finding.detected()
    finding.note("challenger", {"tag": summary.model_tag, "roc_auc": round(summary.roc_auc, 4),
                                "champion_roc_auc_same_rows": summary.champion_score,
                                "decision": summary.decision})
    finding.caught("the gate rejects the challenger", not summary.promoted
                   and summary.decision.startswith("rejected"), summary.decision)
    finding.caught("the challenger is kept, labelled rejected",
                   load_entry(summary.model_tag).stage == "rejected",
                   load_entry(summary.model_tag).stage)
    after = system.store_state(champion.metadata.dataset)
    finding.intact("champion untouched (store label)", after.champion == champion.tag,
                   f"champion {after.champion}")
    finding.intact("MLflow champion alias untouched",
                   after.mlflow_champion == before.mlflow_champion,
                   f"before v{before.mlflow_champion}, after v{after.mlflow_champion}")
    served_after = service.readyz()
    finding.note("readyz", served_after)
    finding.intact("the running service still serves the champion (/readyz)",
                   served_after.get("model_tag") == served_before.get("model_tag")
                   == champion.tag, served_after.get("model_tag"))
    restarted = resolve_entry(dataset=champion.metadata.dataset)
    finding.intact("a restarted pod would serve the champion (model identity rule)",
                   restarted.tag == champion.tag, restarted.resolved_by)


SCENARIOS = [
    Scenario("schema-change", "training",
             "upstream table changes shape: a column renamed, a number exported as text, a new "
             "value in a closed category set",
             "data contract (kernel/contract.py) in `churn train`: exit 2, one line naming "
             "column, rule and rows; nothing registered", schema_change),
    Scenario("leakage", "training",
             "a column written by the cancellation flow (known only after churn) appears and a "
             "contract revision declares it a feature",
             "undeclared columns are ignored; a declared one that alone predicts churn "
             "(ROC-AUC >= leakage_auc) stops training (leakage_action: refuse)", leakage),
    Scenario("label-collapse", "training",
             "the label job breaks: the churn rate falls to 0.25%",
             "contract min_positive_rate / min_positives: training refuses, naming the rate",
             label_collapse),
    Scenario("worse-challenger", "training",
             "a challenger trained on labels a backfill shuffled (the contract cannot see it)",
             "champion/challenger gate (training/promote.py) on the same test rows; the "
             "service keeps serving the champion", worse_challenger),
]
