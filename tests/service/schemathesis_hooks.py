"""Schemathesis hooks (``SCHEMATHESIS_HOOKS``) of tests/service/test_openapi.py, which runs every
check of schemathesis's own plus the one below, on data narrowed in one documented way.

``map_case``: the document cannot express everything the server checks (docs/contract.md, "How
values are read"): the bounds of a number sent as text (``"30000"`` for a field with ``max:
20000``), text overflowing a float (``"1e400"``), and a JSON number whose text is over 100
characters for an open-set category (``1e300``). The server rightly answers 400 to those, which
``positive_data_acceptance`` would report as valid data refused; and a /predict_batch body of
several customers almost always holds one, so valid batches would never be tried. So in a
positive case only, such a value becomes the nearest value the server accepts (the bound as
text; 0). Negative cases, and every value the document does bound, are sent as generated.

``every_operation_answers_200_and_400`` fails the run unless each operation answered both a 2xx
and a 400: a server that refused everything, or accepted everything, would pass most checks.
"""

from __future__ import annotations

import math
from typing import Any

import schemathesis

from kernel.contract import categorical_value, numeric_value
from service.feature_values import CATEGORY_MAX_LENGTH


def within_document(schema: dict | None, value: Any) -> Any:
    """``value`` of a field with ``schema``, or the nearest value the server accepts when the
    document cannot say that the server refuses it."""
    members = (schema or {}).get("oneOf", [])
    number = next((m for m in members if m.get("type") == "number"), None)
    text = next((m for m in members if m.get("type") == "string"), None)
    if number is None or text is None:
        return value
    if isinstance(value, str) and "pattern" in text and "enum" not in number:  # numeric
        try:
            read = numeric_value(value)
        except ValueError:  # overflow: the pattern matched
            read = -math.inf if value.strip().startswith("-") else math.inf
        if read is None:
            return value
        clamped = min(max(read, number.get("minimum", -math.inf)),
                      number.get("maximum", math.inf))
        return value if clamped == read else repr(clamped if math.isfinite(clamped) else 0.0)
    if isinstance(value, int | float) and not isinstance(value, bool) and "enum" not in number \
            and "enum" not in text:  # open-set category
        return value if len(categorical_value(value)) <= CATEGORY_MAX_LENGTH else 0
    return value


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return case
    fields = context.operation.schema.raw_schema["components"]["schemas"]["Customer"][
        "properties"]
    rows = case.body.get("customers") if "customers" in case.body else [case.body]
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict):
            for name, value in row.items():
                row[name] = within_document(fields.get(name), value)
    return case


@schemathesis.check
class every_operation_answers_200_and_400:  # noqa: N801 (a check's name is its class name)
    def __init__(self) -> None:
        self.seen: set[tuple[str, int]] = set()
        self.tested: set[str] = set()

    def after_response(self, ctx, response, case) -> None:
        label = case.operation.label
        self.tested.add(label)
        self.seen.add((label, 200 if 200 <= response.status_code < 300 else
                       response.status_code))

    def after_run(self, ctx) -> None:
        missing = [f"{label}: no {status}" for label in sorted(self.tested)
                   for status in (200, 400) if (label, status) not in self.seen]
        if missing:
            raise AssertionError("; ".join(missing))
