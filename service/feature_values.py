"""How the API reads one feature value, and how the OpenAPI document describes what it reads.

A lenient feature (the default) takes what training takes: ``kernel.contract``'s value parsers
(``numeric_value``, ``boolean_value``, ``categorical_value``) turn text such as ``"Yes"`` or
``"3168"`` into the JSON value it stands for before pydantic checks type, bounds and set. A
``strict`` feature takes only its JSON type, and a 400 names the JSON value to send instead.

The OpenAPI schema of each feature is a ``oneOf`` of the JSON type and the text the parsers read
(BentoML flattens ``anyOf`` to its first member). Its patterns are ECMAScript regular expressions
built from the same spellings and ``NUMBER_PATTERN``; Python's ``re`` reads them the same way.
What a pattern cannot say: the bounds of a number given as text, and that text overflowing a
float ("1e400") is no number.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic_core import PydanticCustomError

from kernel.contract import (
    FALSE_SPELLINGS,
    NULL_SPELLINGS,
    NUMBER_PATTERN,
    TRUE_SPELLINGS,
    WHITESPACE,
    FeatureSpec,
    boolean_value,
    categorical_value,
    category_of_number,
    numeric_value,
)

CATEGORY_MAX_LENGTH = 100
_NUMBER = re.compile(NUMBER_PATTERN)


def _listed(words: Iterable[str]) -> str:
    return ", ".join(sorted(words, key=lambda w: (len(w), w)))


_READ: dict[str, Callable[[Any], Any]] = {
    "numeric": numeric_value, "boolean": boolean_value, "categorical": categorical_value}
# Lenient: the error when text (or a number, for booleans and categories) cannot be read.
# Pydantic's own types for the same failure, so the rejected-input metric keeps its labels.
_UNREADABLE = {
    "numeric": ("float_parsing", "Input should be a valid number, unable to parse string as a "
                "number"),
    "boolean": ("bool_parsing", "Input should be a valid boolean: true/false, 0/1, or text "
                f"read as true ({_listed(TRUE_SPELLINGS)}) or false ({_listed(FALSE_SPELLINGS)}),"
                " any case"),
    "categorical": ("string_type", "Input should be a valid string"),
}
# Strict: pydantic's type errors, with the JSON value to send.
_STRICT = {
    "numeric": ("float_type", "a number"),
    "boolean": ("bool_type", "true or false"),
    "categorical": ("string_type", "a string"),
}


def value_reader(spec: FeatureSpec) -> Callable[[Any], Any]:
    """The before-validator of a feature: the JSON value pydantic should check, or a
    ``PydanticCustomError`` naming the rule (and, for a strict feature, the value to send)."""
    read = _READ[spec.type]
    kind, message = _UNREADABLE[spec.type]
    numbers_are_read = spec.type != "numeric"  # a JSON number is already a number
    text_limit = CATEGORY_MAX_LENGTH if spec.type == "categorical" and spec.values is None \
        else None

    def lenient(value: Any) -> Any:
        t = type(value)
        if t is str:
            if text_limit is not None and len(value) > text_limit:
                raise PydanticCustomError("string_too_long", "String should have at most "
                                          "{max_length} characters", {"max_length": text_limit})
        elif not (numbers_are_read and (t is int or t is float)):
            return value  # JSON-native: pydantic checks it
        try:
            return read(value)
        except ValueError:
            raise PydanticCustomError(kind, message) from None

    strict_kind, expected = _STRICT[spec.type]
    native = {"numeric": (int, float), "boolean": (bool,), "categorical": (str,)}[spec.type]

    def strict(value: Any) -> Any:
        t = type(value)
        if t not in (str, int, float, bool):
            return value  # null, lists, objects: pydantic's own errors
        if t in native and (spec.type != "categorical" or read(value) == value):
            return value  # already the JSON value training would read
        try:
            canonical = read(value)
        except ValueError:
            canonical = _UNREADABLE
        send = expected if canonical is _UNREADABLE or (canonical is None and not spec.nullable) \
            else json_text(canonical)
        raise PydanticCustomError(
            strict_kind, "Input should be {expected}; this field is strict: send {send}, "
            "not {got}", {"expected": expected, "send": _shortened(send),
                          "got": _shortened(json_text(value))})

    return strict if spec.strict else lenient


def json_text(value: Any) -> str:
    """A JSON value as a client writes it: ``true``, ``3168`` (not ``3168.0``), ``"Yes"``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def _shortened(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --- OpenAPI ----------------------------------------------------------------------------------

def feature_json_schema(spec: FeatureSpec) -> dict[str, Any]:
    """The OpenAPI 3.0 schema of what ``value_reader(spec)`` and pydantic accept together."""
    nullable = {"nullable": True} if spec.nullable else {}
    if spec.type == "numeric":
        number = {"type": "number", **_bounds(spec), **nullable}
        if spec.strict:
            return number
        return {"oneOf": [number, {"type": "string", "pattern": text_pattern(
            [NUMBER_PATTERN], spec.nullable)}]}
    if spec.type == "boolean":
        boolean = {"type": "boolean", **nullable}
        if spec.strict:
            return boolean
        words = [_any_case(w) for w in sorted(TRUE_SPELLINGS | FALSE_SPELLINGS)]
        return {"oneOf": [boolean, {"type": "number", "enum": [0, 1]},
                          {"type": "string", "pattern": text_pattern(words, spec.nullable)}]}
    if spec.values is not None:
        listed = listed_values(spec)
        exact = {"type": "string", "enum": listed, **nullable}
        if spec.strict:
            return exact
        alternatives = [exact, {"type": "string", "pattern": text_pattern(
            [_literal(v) for v in listed], spec.nullable), "not": {"enum": listed}}]
        numbers = [n for n in map(_number_of_category, listed) if n is not None]
        if numbers:
            alternatives.append({"type": "number", "enum": numbers})
        return {"oneOf": alternatives}
    text: dict[str, Any] = {"type": "string", "maxLength": CATEGORY_MAX_LENGTH, **nullable}
    if spec.strict:  # only text that reads as itself: not padded, not blank or null-like
        # "(?![\s\S])", not "$": Python's "$" (jsonschema's) also matches before a final newline.
        text["pattern"] = f"^{_space(negate=True)}(?:[\\s\\S]*{_space(negate=True)})?(?![\\s\\S])"
        text["not"] = {"pattern": null_text_pattern()}
        return text
    if not spec.nullable:
        text["not"] = {"pattern": null_text_pattern()}
    return {"oneOf": [text, {"type": "number"}]}


def listed_values(spec: FeatureSpec) -> list[str]:
    """The values of a closed set that a request can match: those that read as themselves (a
    listed " x " or "NA" never can, since text is stripped and "NA" is null)."""
    return [value for value in spec.values or [] if categorical_value(value) == value]


def describe_spellings(spec: FeatureSpec) -> str:
    """One sentence for the field's description: what else than its JSON type it accepts."""
    if spec.strict:
        return "Strict: only the JSON type is accepted."
    missing = " Blank or null-like text (\"\", \"NA\", \"null\") means null." \
        if spec.nullable else ""
    if spec.type == "numeric":
        return "A number, or a number as text (\"3168\", \" 1e3 \")." + missing
    if spec.type == "boolean":
        return (f"true/false, 0/1, or text read as true ({_listed(TRUE_SPELLINGS)}) or false "
                f"({_listed(FALSE_SPELLINGS)}), any case." + missing)
    return "Text is stripped of surrounding spaces; a number stands for its text (1 for \"1\")." \
        + missing


def text_pattern(alternatives: Iterable[str], nullable: bool) -> str:
    """Text as the parsers read it: optional whitespace around one of ``alternatives`` (or,
    when ``nullable``, a null spelling or nothing)."""
    choices = list(alternatives)
    if nullable:
        choices += _null_words()
    body = f"(?:{'|'.join(choices)})" + ("?" if nullable else "")  # "" is a null spelling
    return f"^{_space()}*{body}{_space()}*$"


def null_text_pattern() -> str:
    """Text the parsers read as null: blank, or a null spelling in any case."""
    return f"^{_space()}*(?:{'|'.join(_null_words())})?{_space()}*$"


def _null_words() -> list[str]:
    return [_any_case(w) for w in sorted(NULL_SPELLINGS) if w]


def _bounds(spec: FeatureSpec) -> dict[str, float]:
    bounds = {}
    if spec.min is not None:
        bounds["minimum"] = spec.min
    if spec.max is not None:
        bounds["maximum"] = spec.max
    return bounds


def _space(negate: bool = False) -> str:
    """A character class of ``WHITESPACE`` (what ``str.strip`` removes), or of all others."""
    codes = sorted(map(ord, WHITESPACE))
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    parts = [_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges]
    return f"[{'^' if negate else ''}{''.join(parts)}]"


def _escape(code: int) -> str:
    return f"\\u{code:04x}"


def _literal(text: str) -> str:
    """``text`` as an ECMAScript (and Python) pattern matching exactly it."""
    out = []
    for char in text:
        if char in "\\^$.|?*+()[]{}/":
            out.append("\\" + char)
        elif not char.isprintable() or char.isspace():
            out.append(_escape(ord(char)) if ord(char) <= 0xFFFF else char)
        else:
            out.append(char)
    return "".join(out)


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else _literal(c) for c in word)


def _number_of_category(value: str) -> int | float | None:
    """The JSON number that stands for category ``value`` ("1" for 1 and 1.0), if one does."""
    if not _NUMBER.fullmatch(value):
        return None
    if value.lstrip("-").isdigit():
        number: int | float = int(value)
        return number if str(number) == value else None
    number = float(value)
    return number if math.isfinite(number) and category_of_number(number) == value else None
