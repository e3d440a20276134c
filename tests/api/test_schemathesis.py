"""Schemathesis against the live server: every operation of /api/schema/, positive and negative
cases (and the stateful links the schema has), with a token that may do everything. Zero server
errors and zero responses that break the schema; the figures are printed (-s) for the report.

Uploads' positive cases are random bytes no tape can be, so the upload POSTs (create, and load a
draft) answer 422 to them by design: only there is the positive-acceptance check left out.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from abaco.roles import Role
from api.models import Scope
from api.tokens import api_token_create
from tests.base import user_create
from tests.kpis.books import dashboard_book

pytestmark = pytest.mark.django_db(transaction=True)

# Examples per operation and mode; SCHEMATHESIS_EXAMPLES raises it for a deeper local run.
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]


@pytest.fixture
def api_setup(live_server, settings):
    media = tempfile.mkdtemp(prefix="abaco-api-fuzz-")
    settings.MEDIA_ROOT = media
    settings.API_THROTTLE_RATE = "100000/min"
    book = dashboard_book()
    book.compute()
    admin = user_create(username="fuzz.admin", role=Role.ADMIN)
    token = api_token_create(user=admin, scopes=list(Scope.values))[1]
    # The schema the server serves, read in-process: generating it over HTTP on a loaded machine
    # can outlast schemathesis' 10 s read timeout, and it is the same view either way.
    served = Client().get("/api/schema/?format=json")
    assert served.status_code == 200
    schema = schemathesis.openapi.from_dict(json.loads(served.content))
    yield schema, live_server.url, {"Authorization": f"Bearer {token}"}
    shutil.rmtree(media, ignore_errors=True)


def explore(operation, mode, *, base_url, auth, excluded, tally) -> None:
    """EXAMPLES generated cases of one operation in one mode; failures are collected."""
    cases, statuses, failures = tally

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same cases on every run: CI fails on code, never on luck
    )
    def run(case):
        response = case.call(base_url=base_url, headers=auth)
        cases[mode.value] += 1
        statuses[response.status_code] += 1
        try:
            case.validate_response(
                response, checks=[c for c in CHECKS if c not in excluded], headers=auth
            )
        except Exception as failure:  # collect them all, fail once with the list
            failures.append(f"{operation.label} [{mode.value}]: {failure}"[:2000])

    run()


def test_every_operation_answers_within_its_schema(api_setup):
    schema, base_url, auth = api_setup
    operations = [result.ok() for result in schema.get_all_operations()]
    tally = (Counter(), Counter(), [])
    for operation in operations:
        excluded = []
        if operation.method.upper() == "POST" and operation.path.startswith("/api/v1/uploads/"):
            excluded = [positive_data_acceptance]  # a file's bytes decide, not the schema
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            explore(operation, mode, base_url=base_url, auth=auth, excluded=excluded, tally=tally)

    cases, statuses, failures = tally
    print(  # noqa: T201 -- the figures the report quotes (pytest -s)
        f"\nschemathesis: {len(operations)} operations, {sum(cases.values())} cases "
        f"({dict(cases)}), statuses {dict(sorted(statuses.items()))}, {len(failures)} failures"
    )
    assert len(operations) >= 26
    assert not [s for s in statuses if s >= 500], statuses
    assert not failures, "\n\n".join(failures[:20])


def test_the_stateful_links_hold(api_setup):
    """Sequences along the links schemathesis infers (a list's ids into its detail, ...)."""
    schema, base_url, auth = api_setup
    machine = schema.as_state_machine()

    class Workflow(machine):
        def get_call_kwargs(self, case):
            return {"base_url": base_url, "headers": auth}

        def validate_response(self, response, case, additional_checks=(), **kwargs):
            case.validate_response(response, checks=CHECKS[:5], headers=auth)

    Workflow.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=5,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )
    )
