"""AI insights (issue 23): the digest's size, and tokens and latency per insight from the fake
OpenAI server over real HTTP, for the latest month-end run of the book in the benchmark database
(the whole portfolio and each entity, on the Responses and the Chat Completions API).

The fake counts about four characters a token (a real model's tokenizer differs by some 10-20%
on JSON). Yardstick: the same fake answering a bare POST with no model work, over the same
loopback HTTP through the same SDK client: an insight's latency over that floor is ours (digest,
schema, verification, rendering, the row written).
"""

from __future__ import annotations

import statistics
import time

import openai
from django.test import override_settings

from abaco.dates import month_end
from kpis.insights.digest import digest_build
from kpis.insights.services import insight_generate
from kpis.insights.summary import summary_write
from kpis.models import Insight, SnapshotRun
from tests.integrations.fakes import openai as fake
from tests.integrations.fakes.server import serve

REPEATS = 3


def _floor(url: str) -> float:
    """Median seconds of a bare Chat Completions round trip to the fake (a tiny answer)."""
    client = openai.OpenAI(api_key=fake.KEY, base_url=f"{url}/v1", max_retries=0)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        client.chat.completions.create(
            model="floor",
            messages=[{"role": "user", "content": "Digest (JSON):\n" + _EMPTY}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "floor", "schema": _SCHEMA, "strict": True},
            },
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


_SCHEMA = {"type": "object", "properties": {}, "required": [], "additionalProperties": False}
_EMPTY = (
    '{"slice":"portfolio","dates":{"current":"2025-01-31","previous_month_end":null},'
    '"series":[{"kpi":"x","slice":"portfolio","values":{"2025-01-31":"1"}}],"crossings":[]}'
)


def run() -> None:
    runs = [r for r in SnapshotRun.objects.order_by("-as_of") if r.as_of == month_end(r.as_of)]
    if not runs:
        print("insights: no month-end snapshot in the benchmark database; skipped")
        return
    run_ = runs[0]
    from kpis.insights.services import insight_slices

    print(f"\nAI insights at {run_.as_of} ({run_.get_basis_display()}), {run_.loans:,} loans")
    for dimension, member in insight_slices(run_):
        started = time.perf_counter()
        digest = digest_build(run=run_, dimension=dimension, member=member)
        built = time.perf_counter() - started
        started = time.perf_counter()
        summary_write(digest)
        summarized = time.perf_counter() - started
        text = digest.text()
        print(
            f"  digest {member or 'portfolio'}: {len(text):,} characters, "
            f"{len(text.encode()):,} bytes, ~{len(text) // 4:,} tokens, "
            f"{len(digest.facts.values)} stored values; built in {built * 1000:.0f} ms, "
            f"summary in {summarized * 1000:.1f} ms"
        )
    server = fake.FakeOpenAI()
    with serve(server) as url:
        floor = _floor(url)
        print(f"  floor: a bare round trip to the fake through the SDK, {floor * 1000:.1f} ms")
        for api in ("responses", "chat"):
            with override_settings(
                OPENAI_ENABLED=True,
                OPENAI_API_KEY=fake.KEY,
                OPENAI_BASE_URL=f"{url}/v1",
                OPENAI_API=api,
            ):
                for dimension, member in insight_slices(run_):
                    made = []
                    for _ in range(REPEATS):
                        started = time.perf_counter()
                        made.append(
                            insight_generate(
                                run=run_, dimension=dimension, member=member, job="bench"
                            )
                        )
                        made[-1].wall = time.perf_counter() - started
                    last = made[-1]
                    wall = statistics.median(i.wall for i in made)
                    model_ms = statistics.median(i.latency_ms for i in made)
                    print(
                        f"  {api:9} {member or 'portfolio':20} {last.get_source_display()}, "
                        f"{last.get_verification_display().lower()}: {last.input_tokens:,} in / "
                        f"{last.output_tokens:,} out tokens, USD {last.cost}, model call "
                        f"{model_ms:.0f} ms ({model_ms / 1000 / floor:.1f}x floor), whole insight "
                        f"{wall * 1000:.0f} ms ({wall / floor:.1f}x floor), median of {REPEATS}"
                    )
    Insight.objects.filter(job="bench").delete()
