"""Reads for dashboards go to the read replica; writes, write transactions, sessions and
everything outside the dashboards stay on the primary (abaco.routers).

The replica here is a second connection to the test database (a mirror of the primary), not a
streaming standby: what is under test is which connection each query takes. docs/scaling.md
gives the figures measured against a real standby."""

from __future__ import annotations

import re

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from abaco.roles import Role
from abaco.routers import ReplicaRouter, _replica_reads
from kpis.engine import snapshot_compute
from kpis.models import KpiValue
from tests.base import user_create
from tests.kpis import books as p

# The alias must exist before the test databases are set up (a mirror: no database of its own).
if "replica" not in connections.settings:
    connections.settings["replica"] = {
        **connections.settings["default"],
        "TEST": {"MIRROR": "default"},
    }

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture
def routed(settings):
    settings.DATABASE_ROUTERS = ["abaco.routers.ReplicaRouter"]
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "abaco.routers.ReplicaReadsMiddleware"]


@pytest.fixture
def manager_client(client):
    client.force_login(user_create(username="mia.manager", role=Role.MANAGER))
    return client


def queries(client, url: str) -> tuple[int, int, int]:
    with (
        CaptureQueriesContext(connections["default"]) as primary,
        CaptureQueriesContext(connections["replica"]) as replica,
    ):
        response = client.get(url)
    client.primary_sql = [q["sql"] for q in primary.captured_queries]
    return response.status_code, len(primary), len(replica)


def test_a_dashboard_reads_its_snapshots_from_the_replica_and_the_session_from_the_primary(
    routed, manager_client
):
    p.dashboard_book()
    snapshot_compute(as_of=p.GOLDEN_AS_OF, job="compute_kpis")
    status, primary, replica = queries(manager_client, reverse("kpis:overview"))
    assert status == 200
    assert replica >= 3  # the snapshot and its values
    # On the primary: session, user, the user's and the groups' permissions (a login just
    # written is seen), the page cache and the access log's journal entry; no book data.
    assert primary >= 4
    book = [sql for sql in manager_client.primary_sql if re.search(r'"(kpis|loans)_', sql)]
    assert book == []


def test_pages_outside_the_dashboards_read_only_the_primary(routed, manager_client):
    status, primary, replica = queries(manager_client, reverse("integrations:status"))
    assert status == 200
    assert (replica, primary > 0) == (0, True)


def test_without_the_router_everything_reads_the_primary(manager_client):
    p.dashboard_book()
    snapshot_compute(as_of=p.GOLDEN_AS_OF, job="compute_kpis")
    status, _, replica = queries(manager_client, reverse("kpis:overview"))
    assert (status, replica) == (200, 0)


def test_inside_a_write_transaction_and_outside_a_request_reads_stay_on_the_primary():
    router = ReplicaRouter()
    assert router.db_for_read(KpiValue) == "default"  # a command or a task
    token = _replica_reads.set(True)
    try:
        assert router.db_for_read(KpiValue) == "replica"
        with transaction.atomic():
            assert router.db_for_read(KpiValue) == "default"  # reads what it wrote
    finally:
        _replica_reads.reset(token)
    assert router.db_for_write(KpiValue) == "default"
    assert router.allow_migrate("replica", "kpis") is False
