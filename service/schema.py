"""Request and response models, built from the data contract stored with the served model.

Field names, types, bounds, closed category sets, nullability and descriptions all come from the
contract, so training and serving cannot disagree and the OpenAPI page shows the real fields.
Values are read as training reads them (``"Yes"`` and ``0`` are booleans, ``"3168"`` is a
number), or, for a ``strict`` feature, only as their JSON type: ``service.feature_values``.
``service.validation`` implements exactly these rules column-wise for large batches.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model

from kernel.contract import DataContract, FeatureSpec, boolean_value, numeric_value
from service.feature_values import (
    CATEGORY_MAX_LENGTH,
    describe_spellings,
    feature_json_schema,
    value_reader,
)

RiskLevel = Literal["LOW", "MEDIUM", "HIGH"]
ID_MAX_LENGTH = 128


class CustomerBase(BaseModel):
    """Base of the generated customer model: after each feature's reader, strict JSON types;
    unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _describe(name: str, spec: FeatureSpec) -> str:
    parts = [spec.description] if spec.description else []
    if spec.type == "categorical" and spec.values is None:
        parts.append("Open set: an unseen value is accepted, scored and flagged.")
    if spec.nullable:
        parts.append("May be null or omitted.")
    parts.append(describe_spellings(spec))
    return " ".join(parts)


def feature_field(name: str, spec: FeatureSpec) -> tuple[Any, Any]:
    """The pydantic (annotation, Field) of one contract feature: its reader
    (``service.feature_values``), then the JSON type, bounds and set pydantic checks."""
    kwargs: dict[str, Any] = {"description": _describe(name, spec)}
    if spec.type == "numeric":
        annotation: Any = float
        if spec.min is not None:
            kwargs["ge"] = spec.min
        if spec.max is not None:
            kwargs["le"] = spec.max
        kwargs["allow_inf_nan"] = False
    elif spec.type == "boolean":
        annotation = bool
    elif spec.values is not None:
        annotation = Literal[tuple(spec.values)]
    else:
        annotation = str
        kwargs["min_length"] = 1
        kwargs["max_length"] = CATEGORY_MAX_LENGTH
    if spec.nullable:
        annotation = annotation | None
    # The schema is written whole (OpenAPI 3.0's nullable, oneOf of JSON type and text).
    annotation = Annotated[annotation, BeforeValidator(value_reader(spec)),
                           WithJsonSchema(feature_json_schema(spec))]
    return annotation, Field(None if spec.nullable else ..., **kwargs)


def example_customer(contract: DataContract, reference_row: dict[str, Any] | None) -> dict:
    """A valid request body for the docs: a reference (training) row when there is one."""
    example: dict[str, Any] = {contract.id: "C-000123"} if contract.id else {}
    for name, spec in contract.features.items():
        value = json_value(spec, (reference_row or {}).get(name))
        example[name] = _placeholder(spec) if value is None and not spec.nullable else value
    return example


def customer_body(contract: DataContract, row: dict[str, Any]) -> dict:
    """The request body of one table row (its id, if the contract has one, and features)."""
    body = {contract.id: str(row[contract.id])} if contract.id else {}
    return {**body, **{name: json_value(spec, row[name])
                       for name, spec in contract.features.items()}}


def json_value(spec: FeatureSpec, value: Any) -> Any:
    """A typed table value as its JSON type: null for missing, bool, number, str."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if spec.type == "boolean":
        return boolean_value(value if isinstance(value, str) else float(value))
    if spec.type == "numeric":
        return numeric_value(value) if isinstance(value, str) else float(value)
    return str(value)


def _placeholder(spec: FeatureSpec) -> Any:
    if spec.type == "numeric":
        return float(spec.min if spec.min is not None else 0.0)
    if spec.type == "boolean":
        return False
    return spec.values[0] if spec.values else "unknown"


def customer_model(contract: DataContract, example: dict[str, Any]) -> type[CustomerBase]:
    """One customer as the contract describes it, plus its id; ``example`` shows in the docs."""
    fields: dict[str, Any] = {}
    if contract.id:
        fields[contract.id] = (str, Field(..., min_length=1, max_length=ID_MAX_LENGTH,
                                          description="Customer identifier, echoed in the answer."))
    for name, spec in contract.features.items():
        fields[name] = feature_field(name, spec)
    documented = type("DocumentedCustomer", (CustomerBase,), {
        "model_config": ConfigDict(**CustomerBase.model_config,
                                   json_schema_extra={"example": example}),
    })
    return create_model(
        "Customer",
        __base__=documented,
        __doc__=f"One customer, as the data contract {contract.name!r} defines it.",
        **fields,
    )


class Prediction(BaseModel):
    """The answer for one customer."""

    customer_id: str = Field(description="the request's id field; without one in the contract, "
                             "the customer's position in the request (from 0)")
    churn_probability: float = Field(description="calibrated probability of churning in 30 days")
    will_churn: bool = Field(description="probability at or above the model's business threshold")
    risk_level: RiskLevel = Field(description="LOW below the threshold, HIGH from the high cut-off")
    recommendation: str = Field(description="what to do for this risk level")
    model_version: str
    unseen_categories: list[str] = Field(
        default=[], description="features whose category was never seen in training"
    )


class BatchSummary(BaseModel):
    count: int
    high_risk: int = Field(description="customers rated HIGH")
    will_churn: int = Field(description="customers at or above the threshold")
    mean_probability: float


class BatchPrediction(BaseModel):
    model_version: str
    predictions: list[Prediction]
    summary: BatchSummary


def batch_request_model(customer: type[CustomerBase], max_rows: int) -> type[BaseModel]:
    """``{"customers": [...]}`` with 1..max_rows customers."""
    return create_model(
        "CustomerBatch",
        __doc__=f"Up to {max_rows} customers scored in one call.",
        __config__=ConfigDict(extra="forbid", strict=True),
        customers=(list[customer], Field(..., min_length=1, max_length=max_rows)),
    )
