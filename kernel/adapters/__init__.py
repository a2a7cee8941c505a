"""Private internals of third-party libraries, one small module per library.

churn-serve needs a few things its libraries do not offer publicly (a BentoML timeout that
cancels its timer, IO descriptors, relabelling a stored model; prometheus_client's per-bucket
counters; an MLflow class attribute). Each is reached only through these modules, and
``tests/kernel/test_adapters.py`` checks each against the real, installed library, so an upgrade
that changes one breaks one test loudly instead of the service quietly.
"""
