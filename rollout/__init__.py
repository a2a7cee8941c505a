"""Canary rollouts (`churn canary`): analysis PromQL, kubectl plans, the CLI. docs/canary.md."""

from pathlib import Path

# Here rather than in ``config`` so that every `churn` command, which imports the canary CLI
# to register it, does not import pydantic and the canary's models.
DEFAULT_CONFIG = Path("configs/canary.yaml")
