"""The API contract as tools read it: ``/docs.json`` as one consistent OpenAPI 3.0 document, and
one error answer (``ErrorAnswer``) for every 4xx and 5xx.

BentoML 1.4.39 generates a document that declares 3.0.2 but holds 3.1's ``{"type": "null"}`` (its
own ``TaskStatusResponse``, any ``Optional`` field), documents a 400 whose ``detail`` is a string
while it answers a list, and documents neither 413, 415 nor 429; its router answers 404 and 405
as plain text, and a ``BentoMLException``'s 4xx as a one-element JSON list.

- ``openapi_document`` rewrites the generated document (a dict in, a dict out): OpenAPI 3.0.3
  throughout, ``ErrorAnswer`` for every error response, request bodies required, the request id
  and model version headers, each schema once (under ``components``), nothing unreferenced.
- ``ApiContract`` (ASGI middleware, inside ``RequestContextMiddleware``, which answers 413 by
  ``Content-Length`` and 429) serves that document at ``/docs.json``, refuses an API body not
  sent as JSON (415) or, sent without ``Content-Length``, over the size limit (413), and gives
  every error answer of the app inside it the ``ErrorAnswer`` shape.

3.0 rather than 3.1: the request schema is written in 3.0 (``nullable``, ``service.feature_values``)
and only BentoML's few 3.1 constructs need converting; 3.0 is read by every tool our users point at
us and by those that do not read 3.1 yet (code generators, API gateways that import 3.0 only);
nothing in the contract needs 3.1.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from service.validation import MAX_REPORTED_ERRORS

OPENAPI_VERSION = "3.0.3"
DOCUMENT_PATH = "/docs.json"
SCHEMAS = "#/components/schemas/"
# BentoML's error schemas (``detail`` a string), replaced by ErrorAnswer.
BENTOML_ERROR_SCHEMAS = ("InvalidArgument", "NotFound", "InternalServerError")
BENTOML_SUFFIX = "IODescriptor"  # BentoML's wrapper class of a response model, in its name


class ErrorDetail(BaseModel):
    """One problem with the request (in a 5xx: with serving it)."""

    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="the rule, machine-readable: `missing`, `greater_than_equal`, "
                      "`extra_forbidden`, `json_invalid`, `float_parsing`, `body_too_large`, "
                      "`unsupported_media_type`, `overloaded`, `not_found`, ...")
    loc: list[str | int] = Field(description="where: `[\"customers\", 12, \"tenure_days\"]` is "
                                 "that field of row 12, `[\"body\"]` the body, `[]` the request")
    msg: str = Field(description="what is wrong, for a person")


class ErrorAnswer(BaseModel):
    """Every 4xx and 5xx answer: a one-line summary and each problem found."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="one line: what went wrong")
    detail: list[ErrorDetail] = Field(
        min_length=1, description=f"each problem; at most {MAX_REPORTED_ERRORS}, then one "
        "`too_many_errors` counting the rest")


def error_answer(error: str, kind: str, msg: str, loc: Sequence[str | int] = ()) -> dict:
    """An ``ErrorAnswer`` body with one problem."""
    return {"error": error, "detail": [{"type": kind, "loc": list(loc), "msg": msg}]}


# An answer that names no rule of its own gets one problem: (summary, type, loc) by status.
_UNNAMED: dict[int, tuple[str, str, list[str]]] = {
    404: ("not found", "not_found", []),
    405: ("method not allowed", "method_not_allowed", []),
    413: ("request body too large", "body_too_large", ["body"]),
    415: ("unsupported media type", "unsupported_media_type", ["header", "content-type"]),
    429: ("overloaded", "overloaded", []),
    503: ("service unavailable", "unavailable", []),
}


def _unnamed(status: int) -> tuple[str, str, list[str]]:
    if status in _UNNAMED:
        return _UNNAMED[status]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    return phrase.lower(), phrase.lower().replace(" ", "_").replace("-", "_"), []


def shaped_error(status: int, body: bytes, msg: str | None = None) -> dict:
    """An error answer's ``body`` as an ``ErrorAnswer``: pydantic's problems keep their type, loc
    and msg (its ``url`` goes); a text or ``{"error": ...}`` body becomes one problem named by
    ``status``, saying ``msg`` if given."""
    try:
        payload: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = body.decode("utf-8", "replace").strip()
    if isinstance(payload, list) and len(payload) == 1:  # BentoML's answer to a BentoMLException
        payload = payload[0]
    summary, kind, loc = _unnamed(status)
    text, problems = (payload.get("error"), payload.get("detail")) if isinstance(payload, dict) \
        else (payload, None)
    text = text if isinstance(text, str) and text else summary
    detail = [{"type": str(p.get("type") or kind),
               "loc": [part for part in p.get("loc") or () if isinstance(part, str | int)],
               "msg": str(p.get("msg", ""))}
              for p in (problems if isinstance(problems, list) else ()) if isinstance(p, dict)]
    if not detail:
        said = problems if isinstance(problems, str) and problems else text
        detail = [{"type": kind, "loc": loc, "msg": msg or said}]
    return {"error": text, "detail": detail}


# --- the document ------------------------------------------------------------------------------

HEADERS = {
    "RequestId": {"description": "the request's id: the one sent, else a generated one; every "
                  "log line and inference-log record of the request names it",
                  "required": True, "schema": {"type": "string"}},
    "ModelVersion": {"description": "version of the model that answered",
                     "required": True, "schema": {"type": "string"}},
    "RetryAfter": {"description": "seconds to wait before retrying", "required": True,
                   "schema": {"type": "integer"}},
}
ANSWER_HEADERS = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"},
                  "X-Model-Version": {"$ref": "#/components/headers/ModelVersion"}}
REQUEST_ID = {"name": "X-Request-ID", "in": "header", "required": False, "schema": {
    "type": "string"}, "description": "your id for this request (1-128 printable characters): "
    "echoed, logged and written in the inference log; one is generated when absent or unusable"}
# Error answers of the API operations: status -> (response name, when).
API_ERRORS = {
    "400": ("BadRequest", "The body breaks the contract: each problem names its field (`loc`, "
            "with the row in a batch) and rule (`type`)."),
    "413": ("ContentTooLarge", "The body is larger than the service's `max_body_bytes`."),
    "415": ("UnsupportedMediaType", "The body is not sent as `application/json`."),
    "429": ("TooManyRequests", "Shed: the worker already serves `max_in_flight` requests; "
            "retry after `Retry-After` seconds (or on another pod)."),
    "500": ("InternalServerError", "A fault of the server (never an answer to bad input)."),
    "503": ("ServiceUnavailable", "Not ready, or a batch could not be served within its "
            "latency budget: retry."),
}
DESCRIPTION = (
    "Churn risk of customers, from the model named in `info.version` and every answer's "
    "`X-Model-Version`. The request fields, types, bounds and sets are the model's data "
    "contract. Every error (4xx, 5xx) answers `ErrorAnswer`; besides those documented per "
    "operation: 404 for an unknown path, 405 (with `Allow`) for a wrong method.")


def _error_responses() -> dict[str, dict]:
    responses = {}
    for status, (name, when) in API_ERRORS.items():
        headers = dict(ANSWER_HEADERS)
        if status == "429":
            headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
        responses[name] = {"description": when, "headers": headers, "content": {
            "application/json": {"schema": {"$ref": f"{SCHEMAS}ErrorAnswer"}}}}
    return responses


def _error_schemas() -> dict[str, dict]:
    schema = ErrorAnswer.model_json_schema(ref_template=SCHEMAS + "{model}")
    return {**schema.pop("$defs"), "ErrorAnswer": schema}


def openapi_document(generated: dict, version: str) -> dict:
    """BentoML's generated document (``Service.openapi_spec.asdict()``) as one consistent OpenAPI
    3.0.3 document: every API error response ``ErrorAnswer`` (400, 413, 415, 429, 500, 503),
    request bodies required, the ``X-Request-ID`` request header, the ``X-Request-ID`` and
    ``X-Model-Version`` answer headers, each schema once under ``components`` (named without
    BentoML's ``IODescriptor``), none unreferenced. ``version`` is the served model's."""
    doc = copy.deepcopy(generated)
    doc["openapi"] = OPENAPI_VERSION
    doc["info"] = {**doc.get("info", {}), "version": version, "description": DESCRIPTION}
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in BENTOML_ERROR_SCHEMAS:
        schemas.pop(name, None)
    schemas.update(_error_schemas())
    components["headers"] = HEADERS
    components["responses"] = _error_responses()
    for operation in _operations(doc):
        operation["responses"] = {str(status): answer
                                  for status, answer in operation["responses"].items()}
        if "x-bentoml-name" not in operation:  # BentoML's infrastructure: /livez, /metrics...
            continue
        operation["requestBody"]["required"] = True
        operation["parameters"] = [*operation.get("parameters", []), REQUEST_ID]
        answer = operation["responses"]["200"]
        answer["headers"] = dict(ANSWER_HEADERS)
        operation["responses"] = {"200": answer, **{
            status: {"$ref": f"#/components/responses/{name}"}
            for status, (name, _) in API_ERRORS.items()}}
    for schema in _schema_roots(doc):
        as_openapi_30(schema)
    _refer_to_components(doc)
    _drop_bentoml_suffix(doc)
    _drop_unreferenced(doc)
    return doc


def _operations(doc: dict) -> Iterator[dict]:
    for item in doc.get("paths", {}).values():
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                yield operation


def _media_types(operation: dict) -> Iterator[dict]:
    yield from operation.get("requestBody", {}).get("content", {}).values()
    for answer in operation.get("responses", {}).values():
        yield from answer.get("content", {}).values()


def _schema_roots(doc: dict) -> Iterator[dict]:
    yield from doc["components"]["schemas"].values()
    for operation in _operations(doc):
        for media in _media_types(operation):
            if "schema" in media:
                yield media["schema"]
        for parameter in operation.get("parameters", []):
            if "schema" in parameter:
                yield parameter["schema"]


def as_openapi_30(schema: Any) -> None:
    """Rewrite, in place, a JSON Schema as pydantic or BentoML write it (2020-12 keywords) as an
    OpenAPI 3.0 Schema Object: ``{"type": "null"}`` members and ``type`` lists become
    ``nullable``, ``const`` an ``enum``, numeric ``exclusiveMinimum``/``Maximum`` a bound with
    the 3.0 flag, ``examples`` an ``example``."""
    if not isinstance(schema, dict):
        return
    for key in ("allOf", "anyOf", "oneOf", "prefixItems"):
        for member in schema.get(key, ()):
            as_openapi_30(member)
    for key in ("not", "items", "additionalProperties"):
        as_openapi_30(schema.get(key))
    for member in schema.get("properties", {}).values():
        as_openapi_30(member)
    types = schema.get("type")
    if isinstance(types, list):
        named = [t for t in types if t != "null"]
        if len(named) < len(types):
            schema["nullable"] = True
        if len(named) == 1:
            schema["type"] = named[0]
        else:
            del schema["type"]
            schema["anyOf"] = [{"type": t} for t in named]
    for key in ("anyOf", "oneOf"):
        members = schema.get(key)
        if not members or {"type": "null"} not in members:
            continue
        rest = [m for m in members if m != {"type": "null"}]
        del schema[key]
        if len(rest) == 1 and "$ref" not in rest[0]:
            schema.update(rest[0])  # Optional[X]: X, nullable
            schema["nullable"] = True
        elif len(rest) == 1:
            schema.update({"allOf": rest, "nullable": True})
        else:  # one member takes null, so oneOf still matches exactly one
            typed = next((m for m in rest if "type" in m), rest[0])
            typed["nullable"] = True
            schema[key] = rest
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = schema.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            schema[bound], schema[exclusive] = value, True
    if "examples" in schema:
        examples = schema.pop("examples")
        if isinstance(examples, list) and examples:
            schema.setdefault("example", examples[0])


def _refer_to_components(doc: dict) -> None:
    """An operation's schema that equals a component (BentoML inlines copies) becomes a $ref."""
    schemas = doc["components"]["schemas"]
    for operation in _operations(doc):
        for media in _media_types(operation):
            schema = media.get("schema")
            if isinstance(schema, dict) and schemas.get(schema.get("title")) == schema:
                media["schema"] = {"$ref": SCHEMAS + schema["title"]}


def _drop_bentoml_suffix(doc: dict) -> None:
    schemas = doc["components"]["schemas"]
    renamed = {name: name.removesuffix(BENTOML_SUFFIX) for name in schemas
               if name.endswith(BENTOML_SUFFIX) and name.removesuffix(BENTOML_SUFFIX)
               not in schemas}
    for old, new in renamed.items():
        schema = schemas.pop(old)
        schemas[new] = {**schema, "title": new} if schema.get("title") == old else schema
    refs = {SCHEMAS + old: SCHEMAS + new for old, new in renamed.items()}

    def rewrite(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in refs:
                node["$ref"] = refs[node["$ref"]]
            for value in node.values():
                rewrite(value)
        elif isinstance(node, list):
            for value in node:
                rewrite(value)

    if refs:
        rewrite(doc)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMAS):
            yield ref.removeprefix(SCHEMAS)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _drop_unreferenced(doc: dict) -> None:
    """Keep the schemas the paths and responses refer to, directly or through each other."""
    schemas = doc["components"]["schemas"]
    outside = {key: value for key, value in doc.items() if key != "components"}
    outside["responses"] = doc["components"]["responses"]
    pending, kept = list(_refs(outside)), set()
    while pending:
        name = pending.pop()
        if name not in kept and name in schemas:
            kept.add(name)
            pending.extend(_refs(schemas[name]))
    for name in set(schemas) - kept:
        del schemas[name]


# --- serving it, and the error answers ---------------------------------------------------------

JSON_MEDIA_TYPE = b"application/json"


def _json_answer(status: int, body: bytes,
                 headers: Sequence[tuple[bytes, bytes]] = ()) -> tuple[dict, dict]:
    return ({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", JSON_MEDIA_TYPE), (b"content-length", str(len(body)).encode()),
        *headers]}, {"type": "http.response.body", "body": body})


class ApiContract:
    """Serves ``document()`` (built once per worker) at ``/docs.json``; for a POST to one of
    ``endpoints``, answers 415 unless the body is sent as JSON (or without a Content-Type), and
    413 when one sent without Content-Length exceeds ``max_body_bytes``; gives every error
    answer of ``app`` the ``ErrorAnswer`` shape. ``on_rejected(endpoint, reason)`` counts the
    415s and 413s."""

    def __init__(self, app: Callable, document: Callable[[], dict], endpoints: frozenset[str],
                 max_body_bytes: int,
                 on_rejected: Callable[[str, str], None] | None = None) -> None:
        self.app = app
        self.document = document
        self.endpoints = endpoints
        self.max_body_bytes = max_body_bytes
        self.on_rejected = on_rejected or (lambda endpoint, reason: None)
        self._document: bytes | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "")
        if path == DOCUMENT_PATH and method in ("GET", "HEAD"):
            if self._document is None:
                self._document = orjson.dumps(self.document())
            start, body = _json_answer(200, self._document)
            await send(start)
            await send(body if method == "GET" else {**body, "body": b""})
            return
        if path in self.endpoints and method == "POST":
            media_type, length = None, None
            for name, value in scope.get("headers", ()):
                if name == b"content-type":
                    media_type = value.split(b";", 1)[0].strip().lower()
                elif name == b"content-length":
                    length = value
            if media_type not in (None, JSON_MEDIA_TYPE):
                self.on_rejected(path.strip("/"), "unsupported_media_type")
                sent = media_type.decode("latin-1")
                await self._send_error(send, 415, error_answer(
                    "unsupported media type", "unsupported_media_type",
                    f"send the body as JSON with Content-Type: application/json, not {sent}",
                    ["header", "content-type"]))
                return
            if length is None:  # chunked: the middleware outside could not check the size
                receive = await self._read_within_limit(path, receive, send)
                if receive is None:
                    return
        await self.app(scope, receive, self._shaping(scope, send))

    async def _read_within_limit(self, path: str, receive: Callable,
                                 send: Callable) -> Callable | None:
        """The whole body, replayed to the app; None once a 413 (or nothing, if the client
        left) was answered instead."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                self.on_rejected(path.strip("/"), "body_too_large")
                await self._send_error(send, 413, error_answer(
                    "request body too large", "body_too_large",
                    f"body is larger than the limit of {self.max_body_bytes} bytes", ["body"]))
                return None
            if not message.get("more_body", False):
                break
        replay = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replayed() -> dict:
            nonlocal replay
            if replay is not None:
                message, replay = replay, None
                return message
            return await receive()

        return replayed

    @staticmethod
    async def _send_error(send: Callable, status: int, answer: dict) -> None:
        start, body = _json_answer(status, orjson.dumps(answer))
        await send(start)
        await send(body)

    def _shaping(self, scope: dict, send: Callable) -> Callable:
        """``send``, with an error answer's body gathered and rewritten as an ErrorAnswer."""
        held: dict | None = None
        chunks: list[bytes] = []

        async def shaping_send(message: dict) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] >= 400:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = held["status"]
            kept = [(name, value) for name, value in held.get("headers", ())
                    if name.lower() not in (b"content-type", b"content-length")]
            answer = shaped_error(status, b"".join(chunks), _routing_message(scope, status, kept))
            start, body = _json_answer(status, orjson.dumps(answer), kept)
            await send({**held, **start})
            await send(body)

        return shaping_send


def _routing_message(scope: dict, status: int, headers: list[tuple[bytes, bytes]]) -> str | None:
    """What a 404 or 405 from the router should say (it says only "Not Found")."""
    path, method = scope.get("path", ""), scope.get("method", "")
    if status == 404:
        return f"no endpoint at {path}: the API is described at {DOCUMENT_PATH}"
    if status == 405:
        allowed = next((v.decode("latin-1") for n, v in headers if n.lower() == b"allow"), "")
        return f"{method} is not allowed on {path}" + (f"; use {allowed}" if allowed else "")
    return None
