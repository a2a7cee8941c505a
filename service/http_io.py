"""How request bodies become rows and rows become response bodies (BentoML IO specs).

- ``/predict`` takes one customer object and answers one prediction object, yet is a batchable
  BentoML API: its input spec parses the object (stock pydantic, built from the contract) into a
  one-element list, so BentoML's adaptive batching can merge concurrent requests into one model
  call, and its output spec unwraps the one-element list again. OpenAPI shows the object.
- ``/predict_batch`` takes ``{"customers": [...]}``: the input spec validates it column-wise
  (``service.validation``) instead of building 10,000 pydantic objects; OpenAPI still shows the
  pydantic schema of the same rules.

Every rejection raises pydantic's ``ValidationError``, which BentoML answers with 400 and a
JSON body listing each field (``loc``) and rule (``type``, ``msg``), shaped as the documented
``ErrorAnswer`` by ``service.openapi.ApiContract``; ``on_invalid`` counts it. Bodies reach these
specs within the size limit and sent as JSON: the middlewares answer 413 and 415 before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from kernel.adapters.bentoml_internals import IODescriptor, IOMixin, IORootModel
from kernel.contract import DataContract
from service.middleware import request_id_of
from service.validation import BatchDecoder, CustomerColumns

logger = logging.getLogger("churn.service.validation")
InvalidHook = Callable[[str, list[str]], None]


class Row(NamedTuple):
    """One customer of a /predict request, tagged with the request it came in."""

    request_id: str
    customer: BaseModel


def _rejected(endpoint: str, exc: ValidationError, on_invalid: InvalidHook) -> None:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    reasons = sorted({e["type"] for e in errors})
    on_invalid(endpoint, reasons)
    logger.info("rejected", extra={"validation": {
        "endpoint": endpoint, "errors": exc.error_count(), "reasons": reasons,
        "first": [{"loc": e["loc"], "msg": e["msg"]} for e in errors[:5]],
    }})


def single_customer_spec(customer: type[BaseModel], on_invalid: InvalidHook) -> type[IODescriptor]:
    class OneCustomer(IORootModel[list[Any]]):
        __root_input__ = True

        @classmethod
        async def from_http_request(cls, request: Request, serde: object) -> OneCustomer:
            try:
                parsed = customer.model_validate_json(await request.body())
            except ValidationError as exc:
                _rejected("predict", exc, on_invalid)
                raise
            return cls.model_construct(root=[Row(request_id_of(request.scope), parsed)])

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return customer.model_json_schema(*args, **kwargs)

    OneCustomer.__doc__ = customer.__doc__
    return OneCustomer


def single_prediction_spec(prediction: type[BaseModel]) -> type[IODescriptor]:
    class OnePrediction(IORootModel[list[Any]]):
        @classmethod
        async def to_http_response(cls, obj: Any, serde: object) -> Response:
            (answer,) = obj  # adaptive batching hands each request its own one-element slice
            return Response(orjson.dumps(answer), media_type="application/json")

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return prediction.model_json_schema(*args, **kwargs)

    return OnePrediction


def customer_batch_spec(batch_model: type[BaseModel], contract: DataContract, max_rows: int,
                        on_invalid: InvalidHook, threads: int = 1) -> type[IODescriptor]:
    decoder = BatchDecoder(contract, batch_model, max_rows, threads)

    class CustomerBatch(IOMixin, batch_model):  # type: ignore[misc, valid-type]
        @classmethod
        async def from_http_request(cls, request: Request, serde: object) -> CustomerBatch:
            try:
                columns = decoder.decode(await request.body())
            except ValidationError as exc:
                _rejected("predict_batch", exc, on_invalid)
                raise
            columns.request_id = request_id_of(request.scope)
            return cls.model_construct(customers=columns)

    CustomerBatch.__doc__ = batch_model.__doc__
    return CustomerBatch


def json_response(payload: Any) -> Response:
    return json_body_response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def json_body_response(body: bytes) -> Response:
    """An answer whose body is already JSON text."""
    return Response(body, media_type="application/json")


__all__ = ["CustomerColumns", "Row", "customer_batch_spec", "json_body_response", "json_response",
           "single_customer_spec", "single_prediction_spec"]
