"""MLflow internals (checked against mlflow 3.1-3.17).

MLflow wraps the ``predict`` of every ``PythonModel`` subclass in type-hint based input
validation and warns when ``predict`` has no supported hints. Ours takes a DataFrame of raw
contract columns that the data contract validates, so we opt out with the class attribute its
own built-in models use, ``_skip_type_hint_validation``. Not packed into the Bento.
"""

from __future__ import annotations

import mlflow.pyfunc


class UnvalidatedPythonModel(mlflow.pyfunc.PythonModel):
    """A PythonModel whose ``predict`` MLflow does not wrap in type-hint validation."""

    _skip_type_hint_validation = True

    def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow's signature
        raise NotImplementedError


def predict_is_wrapped(model_class: type) -> bool:
    """True when MLflow wrapped ``model_class.predict`` in its validation."""
    return bool(getattr(model_class.__dict__.get("predict"), "_is_pyfunc", False))
