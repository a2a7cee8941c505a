"""A model that raises on every batch it scores: the real failure of a shadow whose code or
artefact is broken, loaded by a real `bentoml serve` from the store (the server's working
directory is the repository, so it can unpickle this module's class)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kernel.model import ChurnModel, PlattCalibration


@dataclass(frozen=True)
class BrokenCalibration(PlattCalibration):
    def apply(self, raw_scores: np.ndarray) -> np.ndarray:
        raise RuntimeError("injected: this model fails on every batch")


def broken_copy(model: ChurnModel) -> ChurnModel:
    return replace(model, calibration=BrokenCalibration(model.calibration.slope,
                                                        model.calibration.intercept))
