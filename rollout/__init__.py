"""Canary rollouts (`churn canary`): analysis PromQL, kubectl plans, the CLI. docs/canary.md."""

# Here rather than in ``config`` so that every `churn` command, which imports the canary CLI
# to register it, does not import pydantic and the canary's models. Found by the project's one
# rule (kernel.config_files).
CONFIG_NAME = "canary.yaml"
