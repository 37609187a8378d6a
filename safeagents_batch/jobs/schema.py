"""The JSON Schemas shipped in the package, and jobs-file schema errors as located problems."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from safeagents_batch.jobs.yamlmarks import KeyPath, MarkedDocument, Position

SchemaProblem = tuple[Position, KeyPath, str]


SHOWN_CHARS = 60  # of a value quoted in a message


def schema_text(name: str) -> str:
    """`name` is `jobs` or `manifest`; the file lives inside the installed package."""
    return (
        resources.files("safeagents_batch")
        .joinpath(f"schemas/{name}.schema.json")
        .read_text("utf-8")
    )


@cache
def load_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(schema_text(name))
    return schema


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    """`pattern` as JSON Schema means it (ECMA-262): `$` is the very end of the text. Python's
    `$` also matches before a final newline, which let "2g\\n" or a name ending in a newline
    through; appending one more newline makes such a match fail and keeps every other one."""
    if not validator.is_type(instance, "string"):
        return
    found = re.search(pattern, instance)
    if found and instance.endswith("\n"):
        found = re.search(pattern, instance + "\n")
    if not found:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _is_integer(checker: Any, instance: Any) -> bool:
    """JSON Schema counts 2.0 as an integer; the records need a Python int (`range(repeat)`)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {"pattern": _ecma_pattern},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


@cache
def _validator(name: str) -> Any:
    return _Validator(load_schema(name))


def validate_against(name: str, data: Any) -> list[str]:
    """Plain messages for a document we wrote ourselves (the manifest); empty when valid."""
    return [
        f"{format_key_path(tuple(e.absolute_path))}: {e.message}"
        for e in _validator(name).iter_errors(data)
    ]


def jobs_schema_problems(doc: MarkedDocument) -> list[SchemaProblem]:
    """Every schema violation of a jobs document, each placed on the key or value at fault
    (in the validator's order: the loader sorts them together with its own)."""
    return [
        problem
        for error in _validator("jobs").iter_errors(doc.data)
        for problem in _located(error, doc)
    ]


def _located(error: jsonschema.ValidationError, doc: MarkedDocument) -> Iterator[SchemaProblem]:
    path: KeyPath = tuple(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
        error.instance, dict
    ):
        yield from _unknown_keys(error, path, doc)
        return
    if error.validator == "required":
        yield doc.position(path), path, error.message
        return
    if "propertyNames" in error.relative_schema_path and isinstance(error.instance, str):
        # The failing instance is a key of the mapping at `path`: point at that key.
        key_path: KeyPath = (*path, error.instance)
        yield doc.position(key_path, of_key=True), key_path, _friendly(error)
        return
    yield doc.position(path), path, _friendly(error)


def _unknown_keys(
    error: jsonschema.ValidationError, path: KeyPath, doc: MarkedDocument
) -> Iterator[SchemaProblem]:
    allowed = _allowed_keys(error.schema)
    for key in error.instance:
        if key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
        message = f"unknown key {str(key)!r}" + (f" (did you mean '{hint[0]}'?)" if hint else "")
        yield doc.position((*path, key), of_key=True), (*path, key), message


def _allowed_keys(subschema: Any) -> set[str]:
    """Property names a (sub)schema declares, following local `$ref`s."""
    if not isinstance(subschema, dict):
        return set()
    allowed = set(subschema.get("properties", {}))
    ref = subschema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        allowed |= _allowed_keys(load_schema("jobs")["$defs"].get(ref.removeprefix("#/$defs/")))
    return allowed


def _friendly(error: jsonschema.ValidationError) -> str:
    if _may_be_secret(tuple(error.absolute_path)):
        return _without_value(error)
    if (
        error.validator == "type"
        and error.validator_value == "string"
        and isinstance(error.instance, (bool, int, float))
    ):
        return f"{error.message}; quote it to make it a string"
    if error.validator == "pattern":
        description = error.schema.get("description") if isinstance(error.schema, dict) else None
        rule = description or f"must match {error.validator_value}"
        return f"{_shown(error.instance)} is not allowed here: {rule}"
    if list(error.absolute_path) == ["version"]:
        return f"unsupported version {_shown(error.instance)}; this tool reads version 1"
    # jsonschema's messages start with the value's repr, whole: a long one is cut.
    whole = repr(error.instance)
    return str(error.message).replace(whole, _shown(error.instance), 1)


def _shown(value: object) -> str:
    whole = repr(value)
    return whole if len(whole) <= SHOWN_CHARS else f"{whole[:SHOWN_CHARS]}... ({len(whole)} chars)"


def _may_be_secret(path: KeyPath) -> bool:
    """A value under `env` (a password a user wrote unquoted) or `matrix` (a key among the
    values) may be a secret: never in a message."""
    return any(part in ("env", "matrix") for part in path[:-1])


def _without_value(error: jsonschema.ValidationError) -> str:
    kind = _kind(error.instance)
    if error.validator == "type" and error.validator_value == "string":
        if isinstance(error.instance, (bool, int, float)):
            return f"{kind} is not a string; quote it to make it a string (value not shown)"
        return f"{kind} is not a string (value not shown)"
    rule = f"{error.validator} {_shown(error.validator_value)}"
    return f"{kind} is not allowed here ({rule}; value not shown)"


def _kind(value: object) -> str:
    """What a YAML value is, in a user's words."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    return "a mapping" if isinstance(value, dict) else "a string"


def format_key_path(path: KeyPath) -> str:
    """('jobs', 1, 'timeout') -> 'jobs[1].timeout'; the document itself is '(top)'.

    A key that is not a plain word is quoted (`env['A B']`): a path stays one unambiguous line.
    """
    text = ""
    for part in path:
        if isinstance(part, int) or not _PLAIN_KEY.fullmatch(part):
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else part
    return text or "(top)"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
