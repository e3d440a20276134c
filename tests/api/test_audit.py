"""The access log over the API (/api/v1/audit/access/): the workbench's Access log tab (reads,
exports and sign-in events, not the rest of the journal) with its filters, cursor pages and CSV,
for an auditor's role with the read:audit scope only."""

from __future__ import annotations

import csv
import io
from datetime import datetime

from django.utils import timezone

from api.tokens import api_token_create
from compliance.access import security_event_record
from compliance.journal import journal_append
from compliance.models import JournalEntry
from tests.api.base import ApiTestCase

ACCESS = "/api/v1/audit/access/"


def local(*args: int) -> datetime:
    """An instant in the operators' time zone (the one since/until read)."""
    return timezone.make_aware(datetime(*args))


class AccessLogApiTests(ApiTestCase):
    def setUp(self) -> None:
        self.made, token = api_token_create(user=self.client_user, scopes=["read:book"])
        with self.captureOnCommitCallbacks(execute=True):
            journal_append(
                kind=JournalEntry.Kind.ACCESS,
                action="view",
                by=self.manager,
                object="loans.loan:42",
                path="/kpis/loans/42/",
                at=local(2025, 3, 1, 10, 0),
            )
            journal_append(
                kind=JournalEntry.Kind.ACCESS,
                action="export",
                by=self.manager,
                path="/kpis/loans/",
                rows=12,
                filters={"entity": "ABF"},
                at=local(2025, 3, 5, 23, 30),
            )
            journal_append(
                kind=JournalEntry.Kind.IMPORT,
                action="load",
                actor=self.steward.username,
                object="loans.batch:1",
                at=local(2025, 3, 6, 9, 0),
            )
            security_event_record(action="sign in failed", username="mallory")
            self.client.get("/api/v1/loans/?entity=ABF", headers=self.bearer(token))

    def results(self, query: str = "", user=None, **kwargs) -> list[dict]:
        response = self.api_get(ACCESS + query, user=user or self.auditor, **kwargs)
        self.assertEqual(response.status_code, 200, response.content[:500])
        return response.json()["results"]

    def test_it_lists_reads_and_sign_in_events_newest_first_but_not_the_rest_of_the_journal(self):
        rows = self.results()
        self.assertEqual(
            [(r["kind"], r["action"], r["user"]) for r in rows],
            [
                ("access", "api list", "cleo.client"),
                ("sign_in", "sign in failed", "mallory"),
                ("access", "export", self.manager.username),
                ("access", "view", self.manager.username),
            ],
        )

    def test_an_api_read_shows_its_token_filters_rows_and_status(self):
        read = self.results()[0]
        self.assertEqual(
            (read["path"], read["filters"], read["rows"], read["token_id"], read["extra"]),
            ("/api/v1/loans/", {"entity": "ABF"}, 0, str(self.made.pk), {"status": 200}),
        )
        self.assertEqual(read["roles"], ["API client"])
        self.assertEqual(read["user_id"], self.client_user.pk)

    def test_instants_carry_the_offset_of_the_operators_time_zone(self):
        view = self.results("?action=view")[0]
        self.assertEqual(view["at"], local(2025, 3, 1, 10, 0).isoformat())

    def test_it_filters_as_the_workbench_does(self):
        def actions(query: str) -> list[str]:
            return [r["action"] for r in self.results(query)]

        self.assertEqual(actions(f"?user={self.manager.username}"), ["export", "view"])
        self.assertEqual(actions("?object=loans.loan:42"), ["view"])
        self.assertEqual(actions("?object=loans.loan"), ["view"])  # a model: every object of it
        self.assertEqual(actions("?kind=sign_in"), ["sign in failed"])
        # Days in the operators' time zone, until included: 23:30 on the 5th is the 5th.
        self.assertEqual(actions("?since=2025-03-02&until=2025-03-05"), ["export"])
        self.assertEqual(actions("?until=2025-03-01"), ["view"])
        # The ends of the calendar are days like any other (no overflow past the last one).
        self.assertEqual(actions("?since=0001-01-01&until=9999-12-31&action=view"), ["view"])

    def test_a_bad_filter_answers_400_naming_the_field(self):
        response = self.api_get(ACCESS + "?since=yesterday&kind=change", user=self.auditor)
        self.assertEqual(response.status_code, 400)
        self.assertEqual(set(self.problem(response)["errors"]), {"since", "kind"})

    def test_cursor_pages_walk_every_entry_once(self):
        token = self.token(self.auditor)
        url, seen = ACCESS + "?page_size=3", []
        while url:
            page = self.client.get(url, headers=self.bearer(token)).json()
            seen += [r["id"] for r in page["results"]]
            url = page["next"]
        self.assertEqual(len(seen), 4)
        self.assertEqual(seen, sorted(seen, reverse=True))

    def test_a_page_costs_the_same_queries_for_one_entry_or_four(self):
        token = self.token(self.auditor)
        self.client.get(ACCESS, headers=self.bearer(token))  # its last use is written once
        with self.assertNumQueries(4):  # token, role permissions, request count, the page
            one = self.client.get(ACCESS + "?page_size=1", headers=self.bearer(token))
        with self.assertNumQueries(4):
            four = self.client.get(ACCESS, headers=self.bearer(token))
        self.assertEqual((len(one.json()["results"]), len(four.json()["results"])), (1, 4))

    def test_accept_text_csv_streams_it_with_nested_values_as_json(self):
        response = self.api_get(
            ACCESS + "?action=export", user=self.auditor, HTTP_ACCEPT="text/csv"
        )
        rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
        self.assertEqual(
            [(r["user"], r["rows"], r["filters"]) for r in rows],
            [(self.manager.username, "12", '{"entity": "ABF"}')],
        )

    def test_it_needs_read_audit_and_a_role_that_reads_the_audit(self):
        self.assertEqual(
            self.api_get(ACCESS, user=self.auditor, scopes=["read:audit"]).status_code, 200
        )
        self.assertEqual(
            self.api_get(ACCESS, user=self.auditor, scopes=["read:book"]).status_code, 403
        )
        self.assertEqual(self.api_get(ACCESS, user=self.manager).status_code, 403)

    def test_reading_the_access_log_is_itself_logged(self):
        with self.captureOnCommitCallbacks(execute=True):
            self.results("?user=mallory")
        entry = JournalEntry.objects.filter(kind=JournalEntry.Kind.ACCESS).first()
        self.assertEqual((entry.actor, entry.path, entry.rows), (self.auditor.username, ACCESS, 1))
