"""Feature pipeline: from raw contract columns to the model's input matrix.

Everything here is part of the served model, so serving applies exactly the training
transformations: contract typing, derived features, imputation with missing indicators, scaling,
and one-hot encoding that tolerates unseen categories. Only scikit-learn, pandas and numpy are
imported: this module is packed into the Bento.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from kernel.contract import DataContract, parse_boolean, parse_categorical, parse_numeric

MIN_CATEGORY_SHARE = 0.002  # rarer training categories are treated like unseen ones


class ContractTyping(BaseEstimator, TransformerMixin):
    """Select the contract's features and give each its type (idempotent on typed frames).

    Other columns (ids, leakage, anything undeclared) are dropped here, so they can never
    reach the model whatever the caller passes.
    """

    def __init__(self, numeric: list[str], boolean: list[str], categorical: list[str]):
        self.numeric = numeric
        self.boolean = boolean
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: object = None) -> ContractTyping:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        typed = {}
        for column in self.numeric:
            typed[column] = parse_numeric(X[column])[0]
        for column in self.boolean:
            typed[column] = parse_boolean(X[column])[0]
        for column in self.categorical:
            col = X[column]
            typed[column] = col if col.dtype == object else parse_categorical(col)
        return pd.DataFrame(typed, index=X.index)


class DerivedFeatures(BaseEstimator, TransformerMixin):
    """Adds numeric features computed by ``DataFrame.eval`` expressions from the contract."""

    def __init__(self, expressions: dict[str, str]):
        self.expressions = expressions

    def fit(self, X: pd.DataFrame, y: object = None) -> DerivedFeatures:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        if not self.expressions:
            return X
        out = X.copy()
        for name, expression in self.expressions.items():
            values = pd.to_numeric(X.eval(expression), errors="coerce")
            out[name] = np.asarray(values, dtype=float)
        out.replace([np.inf, -np.inf], np.nan, inplace=True)
        return out


def frequent_categories(features: pd.DataFrame, contract: DataContract) -> dict[str, list[str]]:
    """The category vocabulary learnt from training rows; a closed set keeps all its values."""
    vocab: dict[str, list[str]] = {}
    for column in contract.categorical:
        counts = features[column].value_counts()
        seen = counts[counts >= max(1, MIN_CATEGORY_SHARE * len(features))].index.astype(str)
        declared = contract.features[column].values
        vocab[column] = sorted(set(declared) if declared else set(seen))
    return vocab


class FeatureLayout:
    """Column order of the model matrix, fixed up front so constraints map to positions."""

    def __init__(self, contract: DataContract, categories: dict[str, list[str]]):
        self.numeric = contract.numeric + contract.boolean + list(contract.derived)
        self.indicated = [c for c in contract.numeric + contract.boolean
                          if contract.features[c].nullable] + list(contract.derived)
        self.categories = categories
        self.categorical = list(categories)
        self.names = (
            self.numeric
            + [f"missing_{c}" for c in self.indicated]
            + [f"{c}={v}" for c in self.categorical for v in categories[c]]
        )
        self.contract = contract

    def monotone_constraints(self) -> list[int]:
        """+1/-1 for declared monotone features, 0 elsewhere, in matrix order."""
        sign = {"increasing": 1, "decreasing": -1, None: 0}
        specs = self.contract.features
        return [sign[specs[c].monotone] if c in specs else 0 for c in self.numeric] + [0] * (
            len(self.names) - len(self.numeric)
        )


def build_preprocessor(contract: DataContract, categories: dict[str, list[str]]) -> Pipeline:
    """Raw contract columns in, dense float matrix out (columns as in FeatureLayout)."""
    layout = FeatureLayout(contract, categories)
    transformers = [
        ("num", Pipeline([
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]), layout.numeric),
    ]
    if layout.indicated:
        transformers.append(
            ("miss", MissingIndicator(features="all", error_on_new=False), layout.indicated)
        )
    if layout.categorical:
        transformers.append((
            "cat",
            Pipeline([
                ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                ("onehot", OneHotEncoder(
                    categories=[categories[c] for c in layout.categorical],
                    handle_unknown="ignore",
                    sparse_output=False,
                    dtype=np.float32,
                )),
            ]),
            layout.categorical,
        ))
    return Pipeline([
        ("typing", ContractTyping(contract.numeric, contract.boolean, contract.categorical)),
        ("derive", DerivedFeatures(dict(contract.derived))),
        ("columns", ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)),
    ])
