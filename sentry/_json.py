"""Strict JSON parsing for hostile input: UTF-8 only, no duplicate keys, no NaN/Infinity."""
from __future__ import annotations

import json
from typing import Any

__all__ = ["StrictJSONError", "describe", "expect", "loads_strict", "type_name"]


class StrictJSONError(ValueError):
    """The bytes are not strict JSON; the message is one short clause, safe to show."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise StrictJSONError(f"the key {describe(key)} appears twice in one object")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not valid JSON")


def loads_strict(data: bytes) -> Any:
    """Parse ``data`` as strict JSON text, or raise StrictJSONError with one clause.

    Duplicate keys are refused because two parsers may keep different copies, and a signed
    document must mean one thing.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictJSONError("it is not UTF-8 text") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except StrictJSONError:
        raise
    except json.JSONDecodeError as exc:
        raise StrictJSONError(
            f"it is not valid JSON ({exc.msg.lower()} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError):
        # Integers too long to convert, nesting too deep for the parser.
        raise StrictJSONError("it is not JSON that can be read safely") from None


def describe(value: Any, limit: int = 60) -> str:
    """A short, printable rendering of an untrusted value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_JSON_TYPES: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}


def expect(value: Any, json_type: type, what: str, bad) -> Any:
    """``value`` if it has ``json_type`` (dict, list or str), else ``bad("WHAT must be ..., found ...")``."""
    if not isinstance(value, json_type):
        raise bad(f"{what} must be {_JSON_TYPES[json_type]}, found {type_name(value)}")
    return value


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
