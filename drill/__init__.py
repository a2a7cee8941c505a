"""The drill (`churn drill`): break the running system in each way churn systems fail, and prove
where each failure is caught, how fast, and that nothing was lost or wrongly changed.

Read in this order: ``config`` (what the drill breaks and how hard), ``scenario`` (what a
scenario records), ``system`` (the real parts it runs: an isolated model store, `bentoml
serve`, Prometheus with the project's rules scaled in time), ``rules`` (that scaling),
``traffic`` (requests and load), the four groups of scenarios (``training_faults``,
``serving_faults``, ``monitoring_faults``, ``canary_faults``), ``runner`` and ``report``.
Why each guard sits where it does: docs/drill.md.
"""

# Here rather than in ``config`` so that `churn --help` and every other command, which import
# the drill's CLI to register it, do not import pydantic and the drill's models. Found by the
# project's one rule (kernel.config_files).
CONFIG_NAME = "drill.yaml"
