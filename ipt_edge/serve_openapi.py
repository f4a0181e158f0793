"""The OpenAPI 3.1 document of `ipt-edge serve` (GET /openapi.json). Written out here, not
generated: the server checks requests itself (ipt_edge/serve.py) to name the field and index of a
bad one, so no schema library stands between them; tests/test_serve.py checks it names every route."""

from __future__ import annotations

from typing import Any

TEXT = {
    "description": "A non-empty string, or [text, text_pair] for a pair task",
    "oneOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 2, "maxItems": 2},
    ],
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, for a person"},
        "field": {"type": "string", "description": "The request's field at fault: body, texts, tasks"},
        "index": {"type": "integer", "description": "Which text or task entry, from 0"},
        "expected": {"type": "string", "description": "What the field should hold"},
    },
}
RECORD = {
    "type": "object",
    "description": "One text's answer, the shape of `ipt-edge predict --json`, with truncated",
    "properties": {
        "text": {"type": "string"},
        "text_pair": {"type": "string", "description": "A pair's second text"},
        "tasks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "probabilities": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
                },
            },
        },
        "truncated": {"type": "boolean", "description": "The text was cut to a task's token budget"},
    },
}


def _answer(description: str, schema: dict | None = None) -> dict[str, Any]:
    return {
        "description": description,
        **({"content": {"application/json": {"schema": schema}}} if schema else {}),
    }


def _get(summary: str, *, open_to_all: bool = False, **answers: str) -> dict[str, Any]:
    operation = {"summary": summary, "responses": {code[1:]: _answer(text) for code, text in answers.items()}}
    return {"get": {**operation, "security": []} if open_to_all else operation}


def _predict(task_names: list[str]) -> dict[str, Any]:
    name = {"type": "string", "enum": task_names}
    request = {
        "type": "object",
        "required": ["texts"],
        "additionalProperties": False,
        "properties": {
            "texts": {"type": "array", "items": TEXT, "minItems": 1},
            "tasks": {
                "description": "Left out: each text by every task of its kind. One name: every text. A list: one "
                "entry per text, a name or a list of names.",
                "oneOf": [
                    name,
                    {"type": "array", "items": {"oneOf": [name, {"type": "array", "items": name}]}},
                ],
            },
        },
    }
    results = {"type": "object", "properties": {"results": {"type": "array", "items": RECORD}}}
    error = {"$ref": "#/components/schemas/Error"}
    return {
        "post": {
            "summary": "Classify texts, each by its tasks",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {
                "200": _answer("One record per text, in the order given", results),
                "400": _answer(
                    "Bad input: the error names the field, the index and what was expected", error
                ),
                "401": _answer("A missing or wrong API key", error),
                "413": _answer("Too many texts, or too large a body", error),
                "503": _answer("The queue is full: retry after Retry-After seconds", error),
            },
        }
    }


def openapi_document(task_names: list[str], version: str) -> dict[str, Any]:
    """The API, with the bundle's task names."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "ipt-edge serve", "version": version},
        "components": {
            "securitySchemes": {"key": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR},
        },
        "security": [{"key": []}],  # needed only where the server was started with --api-key
        "paths": {
            "/v1/predict": _predict(task_names),
            "/v1/tasks": _get(
                "Each task's name, labels, input (text or text_pair) and max_tokens", _200="The tasks"
            ),
            "/healthz": _get("The process is up", open_to_all=True, _200="Up"),
            "/readyz": _get(
                "The bundle is loaded, checked and warmed up",
                open_to_all=True,
                _200="Ready",
                _503="Not ready",
            ),
            "/metrics": _get("Prometheus metrics", _200="The text exposition format"),
            "/openapi.json": _get("This document", _200="OpenAPI 3.1"),
        },
    }
