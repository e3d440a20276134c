"""The OpenAI client (integrations/openai/client.py) against the fake server over real HTTP: what
it sends, what it makes of each kind of answer, and errors that never carry the key."""

from __future__ import annotations

import json

import pytest
from django.test import override_settings

from integrations.http import ProviderError
from integrations.openai.client import structured_answer
from tests.integrations.fakes import openai as fake
from tests.integrations.fakes.server import serve

DIGEST = {
    "slice": "portfolio",
    "dates": {"current": "2025-07-31", "previous_month_end": "2025-06-30"},
    "series": [
        {
            "kpi": "par_30",
            "slice": "portfolio",
            "values": {"2025-06-30": "3.63", "2025-07-31": "5.84"},
        }
    ],
    "crossings": [],
}
SCHEMA = {
    "type": "object",
    "properties": {
        "headline": {
            "type": "object",
            "properties": {},
            "required": [],
            "additionalProperties": False,
        }
    },
    "required": ["headline"],
    "additionalProperties": False,
}


def ask(url: str, *, api: str, schema: dict | None = None, **settings):
    settings.setdefault("OPENAI_MAX_RETRIES", 0)
    with override_settings(OPENAI_API_KEY=fake.KEY, OPENAI_BASE_URL=f"{url}/v1", **settings):
        return structured_answer(
            system="Brief the managers.",
            user="Digest of stored snapshots (JSON):\n" + json.dumps(DIGEST),
            schema=schema or SCHEMA,
            name="portfolio_insight",
            api=api,
        )


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_it_asks_for_strict_structured_output_and_reads_the_answer_and_its_usage(api):
    server = fake.FakeOpenAI()
    with serve(server) as url:
        answer = ask(url, api=api, OPENAI_MODEL="gpt-4o-mini")
    sent = json.loads(server.bodies[0])
    if api == "responses":
        assert server.requests[0].url.path == "/v1/responses"
        assert sent["text"]["format"]["type"] == "json_schema"
        assert sent["text"]["format"]["strict"] is True
        assert sent["instructions"] == "Brief the managers."
        assert sent["store"] is False
    else:
        assert server.requests[0].url.path == "/v1/chat/completions"
        assert sent["response_format"]["json_schema"]["strict"] is True
        assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert sent["model"] == "gpt-4o-mini"
    assert answer.problem == ""
    assert answer.data["headline"]["kpi"] == "par_30"
    assert answer.data["headline"]["direction"] == "rose"
    assert answer.model == fake.MODEL and answer.api == api
    assert answer.input_tokens == len(json.dumps(sent)) // 4
    assert answer.output_tokens > 0 and answer.latency_ms >= 0


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_a_refusal_and_malformed_json_come_back_as_problems_not_data(api):
    server = fake.FakeOpenAI(script=[fake.refusal(), fake.malformed()])
    with serve(server) as url:
        refused = ask(url, api=api)
        malformed = ask(url, api=api)
    assert (refused.data, refused.problem) == (
        None,
        "refused: I'm sorry, I can't help with that request.",
    )
    assert (malformed.data, malformed.problem) == (None, "the answer is not valid JSON")
    assert malformed.output_tokens > 0  # billed all the same


def test_a_wrong_key_and_a_schema_strict_mode_refuses_fail_at_once_without_the_key():
    server = fake.FakeOpenAI(key="sk-the-right-one")
    with serve(server) as url, pytest.raises(ProviderError) as wrong_key:
        ask(url, api="responses", OPENAI_MAX_RETRIES=3)
    assert len(server.requests) == 1  # a 401 is not retried
    assert wrong_key.value.status == 401
    assert fake.KEY not in str(wrong_key.value)
    loose = {"type": "object", "properties": {"headline": {"type": "string"}}, "required": []}
    server = fake.FakeOpenAI()
    with serve(server) as url, pytest.raises(ProviderError) as refused:
        ask(url, api="chat", schema=loose)
    assert refused.value.status == 400
    assert "'additionalProperties' is required to be supplied and to be false" in str(refused.value)


def test_a_timeout_names_the_path_after_its_retries():
    server = fake.FakeOpenAI(script=[fake.slow(1.0), fake.slow(1.0)])
    with serve(server) as url, pytest.raises(ProviderError) as timed_out:
        ask(url, api="chat", OPENAI_TIMEOUT=0.2, OPENAI_MAX_RETRIES=1)
    assert str(timed_out.value) == "openai: POST /chat/completions: timed out after retries"
    assert len(server.requests) == 2
