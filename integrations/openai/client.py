"""OpenAI (or Azure OpenAI's v1 endpoint, or a compatible server): one structured answer.

The official ``openai`` SDK makes the call; it knows nothing of KPIs. ``structured_answer`` sends
instructions, one user message and a JSON schema, and returns what came back: the parsed JSON,
a refusal, or neither (malformed output), with the model, tokens and latency. It follows the
conventions of ``integrations/http.py`` through the SDK's own seams: explicit timeouts
(``HTTP_CONNECT_TIMEOUT``, ``OPENAI_TIMEOUT``), retries with backoff on connection errors,
timeouts, 408/409/429 and 5xx honouring ``Retry-After`` (``OPENAI_MAX_RETRIES``), errors that name
the provider, path and status and never the key, and a log line per answer.

API shapes followed (platform.openai.com/docs/api-reference):
- Responses: ``POST /responses`` with ``instructions``, ``input`` and ``text.format =
  {"type": "json_schema", "name", "schema", "strict": true}``; the answer's ``output`` holds a
  ``message`` whose ``content`` is ``output_text`` (the JSON) or ``refusal``; ``status`` is
  ``incomplete`` when ``max_output_tokens`` cut it; ``usage.input_tokens``/``output_tokens``.
- Chat Completions: ``POST /chat/completions`` with ``messages`` and ``response_format =
  {"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``; the answer's
  ``choices[0].message`` has ``content`` (the JSON) or ``refusal``; ``finish_reason`` ``length``
  when cut; ``usage.prompt_tokens``/``completion_tokens``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import openai
from django.conf import settings

from integrations.http import ProviderError

logger = logging.getLogger(__name__)
PROVIDER = "openai"


@dataclass(frozen=True)
class StructuredAnswer:
    """What the model answered. ``data`` is None when it refused or its output is not JSON
    (``problem`` says which); tokens are counted either way, since they are billed."""

    data: Any
    problem: str
    model: str
    api: str
    input_tokens: int
    output_tokens: int
    latency_ms: int


def _client() -> openai.OpenAI:
    return openai.OpenAI(
        api_key=settings.OPENAI_API_KEY,
        base_url=settings.OPENAI_BASE_URL,
        timeout=openai.Timeout(settings.OPENAI_TIMEOUT, connect=settings.HTTP_CONNECT_TIMEOUT),
        max_retries=settings.OPENAI_MAX_RETRIES,
    )


def _scrub(text: str) -> str:
    key = settings.OPENAI_API_KEY
    return text.replace(key, "[secret]") if key else text


def _parse(text: str | None) -> tuple[Any, str]:
    if not text:
        return None, "empty answer"
    try:
        return json.loads(text), ""
    except ValueError:
        return None, "the answer is not valid JSON"


def structured_answer(
    *, system: str, user: str, schema: dict[str, Any], name: str, api: str | None = None
) -> StructuredAnswer:
    """Ask once (the SDK retries transient failures) for an answer that follows ``schema``.

    Raises ``ProviderError`` when no answer came: retries ran out, a timeout, a 4xx."""
    api = api or settings.OPENAI_API
    where = "POST /responses" if api == "responses" else "POST /chat/completions"
    started = time.perf_counter()
    try:
        with _client() as client:
            if api == "responses":
                response = client.responses.create(
                    model=settings.OPENAI_MODEL,
                    instructions=system,
                    input=user,
                    text={
                        "format": {
                            "type": "json_schema",
                            "name": name,
                            "schema": schema,
                            "strict": True,
                        }
                    },
                    max_output_tokens=settings.OPENAI_MAX_OUTPUT_TOKENS,
                    store=False,
                )
                answer = _from_response(response)
            else:
                completion = client.chat.completions.create(
                    model=settings.OPENAI_MODEL,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": name, "schema": schema, "strict": True},
                    },
                    max_completion_tokens=settings.OPENAI_MAX_OUTPUT_TOKENS,
                )
                answer = _from_completion(completion)
    except openai.APIStatusError as exc:
        raise ProviderError(
            PROVIDER,
            _scrub(f"{where} answered {exc.status_code}: {exc.message}"[:300]),
            status=exc.status_code,
        ) from None
    except openai.APITimeoutError:
        raise ProviderError(PROVIDER, f"{where}: timed out after retries") from None
    except openai.APIConnectionError as exc:
        raise ProviderError(PROVIDER, _scrub(f"{where}: {type(exc).__name__}")) from None
    latency = round((time.perf_counter() - started) * 1000)
    data, problem, model, tokens_in, tokens_out = answer
    logger.info(
        "provider request",
        extra={
            "provider": PROVIDER,
            "where": where,
            "model": model,
            "ms": latency,
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "problem": problem,
        },
    )
    return StructuredAnswer(data, problem, model, api, tokens_in, tokens_out, latency)


def _from_response(response: Any) -> tuple[Any, str, str, int, int]:
    usage = response.usage
    tokens = (usage.input_tokens, usage.output_tokens) if usage else (0, 0)
    text, refusal = "", ""
    for item in response.output or []:
        if getattr(item, "type", "") != "message":
            continue
        for part in item.content or []:
            if part.type == "output_text":
                text += part.text
            elif part.type == "refusal":
                refusal += part.refusal
    if refusal:
        return None, f"refused: {refusal[:200]}", response.model, *tokens
    if response.status == "incomplete":
        reason = getattr(response.incomplete_details, "reason", "") or "incomplete"
        return None, f"incomplete answer ({reason})", response.model, *tokens
    return *_parse(text), response.model, *tokens


def _from_completion(completion: Any) -> tuple[Any, str, str, int, int]:
    usage = completion.usage
    tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    if not completion.choices:
        return None, "no choices in the answer", completion.model, *tokens
    choice = completion.choices[0]
    if choice.message.refusal:
        return None, f"refused: {choice.message.refusal[:200]}", completion.model, *tokens
    if choice.finish_reason == "length":
        return None, "incomplete answer (max tokens)", completion.model, *tokens
    return *_parse(choice.message.content), completion.model, *tokens
