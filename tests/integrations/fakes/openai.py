"""A fake OpenAI server: the Responses and Chat Completions APIs with structured outputs, answering
the way the API reference documents them (see ``integrations/openai/client.py`` for the shapes).

- ``POST /v1/responses``: ``{"id": "resp_…", "object": "response", "status": "completed",
  "model", "output": [{"type": "message", "role": "assistant", "content": [{"type":
  "output_text", "text": "<json>", "annotations": []}]}], "usage": {"input_tokens",
  "output_tokens", "total_tokens", …}}``; a refusal is a ``{"type": "refusal", "refusal": "…"}``
  content part.
- ``POST /v1/chat/completions``: ``{"id": "chatcmpl-…", "object": "chat.completion", "model",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "<json>", "refusal":
  null}, "finish_reason": "stop"}], "usage": {"prompt_tokens", "completion_tokens",
  "total_tokens"}}``; a refusal has ``content`` null and ``refusal`` set.
- Errors in OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``: 401 for a wrong
  key, 400 for a request that does not ask for strict structured outputs (an object schema whose
  properties are not all required or that allows additional properties, as strict mode refuses),
  429 with ``Retry-After``, 5xx.

It plays the model too: it reads the digest out of the request and writes a faithful answer
(every figure as the digest gives it, every direction as the numbers show), or, when scripted, one
with a wrong number, a wrong direction, malformed JSON, a refusal, an error or a slow answer.
``requests`` keeps every request body it received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

KEY = "sk-fake-openai-key-s3cr3t"
MODEL = "gpt-4o-mini-2024-07-18"
DIGEST_MARK = "(JSON):\n"

Answer = Callable[["FakeOpenAI", httpx.Request, dict[str, Any]], httpx.Response]


def _digest(body: dict[str, Any]) -> dict[str, Any]:
    if "input" in body:
        text = body["input"] if isinstance(body["input"], str) else json.dumps(body["input"])
    else:
        text = next(m["content"] for m in body["messages"] if m["role"] == "user")
    return json.loads(text.split(DIGEST_MARK, 1)[1])


def _direction(now: str, before: str) -> str:
    a, b = Decimal(now), Decimal(before)
    return "rose" if a > b else "fell" if a < b else "unchanged"


def faithful_answer(digest: dict[str, Any]) -> dict[str, Any]:
    """What a careful model writes: crossings first, then each series of the slice, figures as
    placeholders, values and directions exactly as the digest has them."""
    now, before = digest["dates"]["current"], digest["dates"]["previous_month_end"]
    statements = []
    own = [s for s in digest["series"] if s["slice"] == digest["slice"]]
    crossing_keys = {(c["kpi"], c["slice"]) for c in digest["crossings"]}
    ordered = [s for s in digest["series"] if (s["kpi"], s["slice"]) in crossing_keys] + [
        s for s in own if (s["kpi"], s["slice"]) not in crossing_keys
    ]
    for series in ordered[:6]:
        values = series["values"]
        if now not in values:
            continue
        if before and before in values:
            direction = _direction(values[now], values[before])
            text = (
                "{kpi} of {slice} was unchanged at {value} on {date}."
                if direction == "unchanged"
                else "{kpi} of {slice} " + direction + " to {value} on {date} from {previous} "
                "on {compared_to} ({change})."
            )
            compared_to = before
        else:
            direction, compared_to, text = (
                "none",
                None,
                "{kpi} of {slice} stood at {value} on {date}.",
            )
        statements.append(
            {
                "text": text,
                "kpi": series["kpi"],
                "slice": series["slice"],
                "date": now,
                "value": float(values[now]),
                "compared_to": compared_to,
                "direction": direction,
            }
        )
    return {"headline": statements[0], "statements": statements[1:]}


def _tamper(part: str, change: Callable[[dict[str, Any]], None]) -> Answer:
    def answer(fake: FakeOpenAI, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        content = faithful_answer(_digest(body))
        target = content["headline"] if part == "headline" else content["statements"][0]
        change(target)
        fake.planted.append(dict(target))
        return fake.reply(request, body, json.dumps(content))

    return answer


def faithful() -> Answer:
    return lambda fake, request, body: fake.reply(
        request, body, json.dumps(faithful_answer(_digest(body)))
    )


def wrong_number(part: str = "statement") -> Answer:
    """The value of the headline or of the first statement off by one in its last shown digit."""

    def change(statement: dict[str, Any]) -> None:
        step = 0.01 if statement["kpi"].startswith(("par", "collection", "top", "roll")) else 1
        statement["value"] = round(statement["value"] + step * 3, 2)

    return _tamper(part, change)


def wrong_direction(part: str = "statement") -> Answer:
    """The direction of the headline or of the first statement flipped."""

    def change(statement: dict[str, Any]) -> None:
        flipped = {"rose": "fell", "fell": "rose", "unchanged": "rose", "none": "rose"}
        statement["direction"] = flipped[statement["direction"]]
        statement["text"] = statement["text"].replace(" rose ", " fell ", 1)

    return _tamper(part, change)


def malformed() -> Answer:
    return lambda fake, request, body: fake.reply(request, body, '{"headline": {"text": "Portf')


def refusal() -> Answer:
    return lambda fake, request, body: fake.reply(
        request, body, "", refusal="I'm sorry, I can't help with that request."
    )


def error(status: int, *, retry_after: str | None = None) -> Answer:
    kinds = {429: "rate_limit_exceeded", 401: "invalid_api_key"}

    def answer(fake: FakeOpenAI, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        envelope = {
            "message": f"upstream says {status}",
            "type": "requests" if status == 429 else "server_error",
            "param": None,
            "code": kinds.get(status),
        }
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        # Ours retries as told; the header keeps the SDK from deciding on its own.
        return httpx.Response(status, json={"error": envelope}, headers=headers)

    return answer


def slow(seconds: float) -> Answer:
    """An answer that takes longer than the client waits (the client times out)."""

    def answer(fake: FakeOpenAI, request: httpx.Request, body: dict[str, Any]) -> httpx.Response:
        time.sleep(seconds)
        return faithful()(fake, request, body)

    return answer


def _strict_schema_problem(schema: Any, where: str = "()") -> str:
    """What strict structured outputs refuse in a schema: an object whose properties are not all
    required, or that does not set ``additionalProperties`` to false."""
    if not isinstance(schema, dict):
        return ""
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return f"In context={where}, 'additionalProperties' is required to be supplied and to be false."
        if sorted(schema.get("required", [])) != sorted(properties):
            return f"In context={where}, 'required' is required to be supplied and to be an array including every key in properties."
        for name, sub in properties.items():
            if problem := _strict_schema_problem(sub, f"{where[:-1]}'{name}',)"):
                return problem
    if "items" in schema:
        return _strict_schema_problem(schema["items"], f"{where[:-1]}'items',)")
    return ""


def _structured_output_problem(path: str, body: dict[str, Any]) -> str:
    """Why the request does not ask for strict structured outputs ("" when it does)."""
    if path == "/v1/responses":
        fmt = (body.get("text") or {}).get("format") or {}
        spec = fmt
    else:
        fmt = body.get("response_format") or {}
        spec = fmt.get("json_schema") or {}
    if fmt.get("type") != "json_schema" or not spec.get("name") or "schema" not in spec:
        return "This test server answers only structured outputs (a json_schema format)."
    if spec.get("strict") is not True:
        return "This test server expects strict structured outputs."
    problem = _strict_schema_problem(spec["schema"])
    return f"Invalid schema for response_format '{spec['name']}': {problem}" if problem else ""


@dataclass
class FakeOpenAI:
    key: str = KEY
    model: str = MODEL
    script: list[Answer] = field(default_factory=list)  # served first, one per request
    requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    served: list[tuple[str, int, float]] = field(default_factory=list)  # path, status, time
    planted: list[dict[str, Any]] = field(default_factory=list)  # statements tampered with

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        content = request.read()
        self.bodies.append(content)
        if request.headers.get("Authorization") != f"Bearer {self.key}":
            return self._served(request, error(401)(self, request, {}))
        path = request.url.path
        if request.method != "POST" or path not in ("/v1/responses", "/v1/chat/completions"):
            return self._served(
                request,
                httpx.Response(
                    404,
                    json={
                        "error": {
                            "message": "Not found",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": None,
                        }
                    },
                ),
            )
        body = json.loads(content)
        if problem := _structured_output_problem(path, body):
            return self._served(
                request,
                httpx.Response(
                    400,
                    json={
                        "error": {
                            "message": problem,
                            "type": "invalid_request_error",
                            "param": "text.format"
                            if path == "/v1/responses"
                            else "response_format",
                            "code": "invalid_json_schema",
                        }
                    },
                ),
            )
        answer = self.script.pop(0) if self.script else faithful()
        return self._served(request, answer(self, request, body))

    def _served(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        self.served.append((request.url.path, response.status_code, time.monotonic()))
        return response

    def reply(
        self, request: httpx.Request, body: dict[str, Any], text: str, *, refusal: str = ""
    ) -> httpx.Response:
        """The API's success shape around ``text`` (or a refusal), with token counts."""
        tokens_in = max(1, len(json.dumps(body)) // 4)  # about four characters a token
        tokens_out = max(1, len(text or refusal) // 4)
        if request.url.path == "/v1/responses":
            part = (
                {"type": "refusal", "refusal": refusal}
                if refusal
                else {"type": "output_text", "text": text, "annotations": []}
            )
            return httpx.Response(
                200,
                json={
                    "id": f"resp_{len(self.requests):04d}",
                    "object": "response",
                    "created_at": 1765000000,
                    "status": "completed",
                    "model": self.model,
                    "output": [
                        {
                            "type": "message",
                            "id": f"msg_{len(self.requests):04d}",
                            "status": "completed",
                            "role": "assistant",
                            "content": [part],
                        }
                    ],
                    "parallel_tool_calls": True,
                    "tool_choice": "auto",
                    "tools": [],
                    "text": body.get("text", {}),
                    "usage": {
                        "input_tokens": tokens_in,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": tokens_out,
                        "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": tokens_in + tokens_out,
                    },
                },
            )
        return httpx.Response(
            200,
            json={
                "id": f"chatcmpl-{len(self.requests):04d}",
                "object": "chat.completion",
                "created": 1765000000,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None if refusal else text,
                            "refusal": refusal or None,
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                },
            },
        )
