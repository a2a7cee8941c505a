"""The model lifecycle (`churn lifecycle ...`): from drift to a promoted model without glue.

idle -> retraining -> challenger (registered, gated) -> shadow (judged on paired live
predictions) -> canary (judged at each step) -> awaiting approval -> promoted; any failed
judgement -> rejected, with its evidence. Read in this order: ``state`` (what is persisted and
how one step at a time is guaranteed), ``engine`` (what moves each state; one step: lock,
resume, act, record), ``world`` (the retrain check, training and gating a challenger, the
store), ``platform`` (the cluster edits, the same kubectl argument lists as `churn canary` and
`churn shadow`, or local servers), ``cli``. docs/lifecycle.md.
"""

# Here rather than in ``config`` so that every `churn` command, which imports the lifecycle CLI
# to register it, does not import pydantic. Found by the project's one rule.
CONFIG_NAME = "lifecycle.yaml"
