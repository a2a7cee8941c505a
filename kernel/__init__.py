"""The shared kernel of churn-serve: what a churn model *is*, used by every workload.

Training, serving and monitoring all import from here, never from each other:

    kernel  <-  training   (raw table -> gated model in the store)
    kernel  <-  service    (the store entry -> HTTP answers)
    kernel  <-  monitoring (the store entry + inference log -> drift, performance)

- ``contract``   the data contract (YAML) and its validation
- ``features``   the served feature pipeline (custom sklearn transformers)
- ``model``      ``ChurnModel``: pipeline + Platt calibration, and calibration error
- ``store``      the BentoML model-store entry and the one model identity
- ``ingest``     tables in and out: CSV, Parquet, SQLAlchemy URLs
- ``yaml_model`` every YAML file into pydantic, one clear error
- ``paths``      where state lives (``CHURN_HOME``)

Everything here except ``processes`` and ``adapters.mlflow`` is packed into the Bento, so it
imports only what serving has (pandas, numpy, scikit-learn, pydantic, pyyaml, bentoml).
"""
