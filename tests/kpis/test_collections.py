"""The collections page reads the fixture book's snapshots (tests/kpis/books.py) plus one
loan that pays late, on time and ahead in March, and shows these hand-worked numbers:

    L6  C6  ABT  factoring  3,000 disbursed 2025-01-05; due 02-05, 03-05, 04-05 1,000 each;
        paid 03-01 1,000 (meets 02-05: overdue), 03-03 1,000 (meets 03-05: current),
        03-04 500 (meets 04-05, after March: advance). At 03-31 OB 500, current.

    month    scheduled                      collected               rate      overdue current advance
    2025-01  4,000 (L2)                     0                       0.00%     0       0       0
    2025-02  7,000 (L1 5,000 L4 1,000 L6)   5,000 (L1 on its day)   71.43%    0       5,000   0
    2025-03  6,000 (L1 5,000 L6 1,000)      2,500 (L6)              41.67%    1,000   1,000   500

Falling due after 2025-03-31, live loans: L3 04-01 2,000, =L5 04-15 500, L6 04-05 1,000: 3,500 on
3 loans within 30, 60 and 90 days. After 2025-02-28: L1 03-10 5,000 and L6 03-05 1,000 within
30 days (to 03-30): 6,000 on 2 loans; L3 04-01 2,000 and L6 04-05 1,000 within 60 days as well:
9,000 on 3 loans.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

from django.urls import reverse

from kpis.engine import snapshot_compute
from tests.base import CastTestCase
from tests.kpis.books import ABF, dashboard_book, more_loans

COLLECTIONS = reverse("kpis:collections")


class CollectionsTestCase(CastTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        cls.book = dashboard_book()
        cls.book.lend(
            "L6",
            customer="C6",
            principal="3000",
            on=date(2025, 1, 5),
            schedule=(
                (date(2025, 2, 5), "1000"),
                (date(2025, 3, 5), "1000"),
                (date(2025, 4, 5), "1000"),
            ),
            paid=(
                (date(2025, 3, 1), "1000"),
                (date(2025, 3, 3), "1000"),
                (date(2025, 3, 4), "500"),
            ),
        )
        cls.book.compute()

    def setUp(self) -> None:
        self.client.force_login(self.manager)

    def page(self, **params):
        """The page's selector result (computed: a page from the page cache has only its HTML)."""
        with self.settings(PAGE_CACHE_SECONDS=0):
            return self.client.get(COLLECTIONS, params).context["c"]

    def months(self, **params) -> dict[str, dict]:
        c = self.page(**params)
        return {
            m.label: {
                "scheduled": m.scheduled,
                "collected": m.collected,
                "rate": None if m.rate is None else round(m.rate, 4),
                **{code.removeprefix("collections_"): v for code, v in m.split.items()},
            }
            for m in c.months
        }

    def due(self, **params) -> list[tuple[int, date, Decimal, int]]:
        c = self.page(**params)
        return [(w.days, w.until, w.principal, w.loans) for w in c.due]


class CollectionNumbersTests(CollectionsTestCase):
    def test_it_shows_scheduled_against_collected_cash_and_its_split_by_month(self):
        self.assertEqual(
            self.months(),
            {
                "2025-01": {
                    "scheduled": 4000,
                    "collected": 0,
                    "rate": 0,
                    "overdue": 0,
                    "current": 0,
                    "advance": 0,
                },
                "2025-02": {
                    "scheduled": 7000,
                    "collected": 5000,
                    "rate": Decimal("0.7143"),
                    "overdue": 0,
                    "current": 5000,
                    "advance": 0,
                },
                "2025-03": {
                    "scheduled": 6000,
                    "collected": 2500,
                    "rate": Decimal("0.4167"),
                    "overdue": 1000,
                    "current": 1000,
                    "advance": 500,
                },
            },
        )

    def test_the_month_table_and_tiles_read_without_javascript(self):
        response = self.client.get(COLLECTIONS)
        html = response.content.decode()
        table = html[
            html.index('id="collection-months"') : html.index(
                "</table>", html.index('id="collection-months"')
            )
        ]
        # Newest month first, rates coloured by their thresholds (red below 80%).
        self.assertLess(table.index("2025-03"), table.index("2025-01"))
        self.assertIn('<td class="num red">41.67%</td>', table)
        self.assertIn("71.43%", table)
        self.assertContains(response, "Collected 2,500 USD of 6,000 USD scheduled.")
        tiles = {t.code: t.display for t in response.context["c"].tiles}
        self.assertEqual(
            tiles,
            {
                "collection_rate": "41.67%",
                "collections_overdue": "1,000",
                "collections_current": "1,000",
                "collections_advance": "500",
            },
        )
        self.assertContains(response, "PAYMENT transactions dated in the month of R")

    def test_it_draws_the_months_from_json_data(self):
        chart = self.client.get(COLLECTIONS).context["c"].chart
        self.assertEqual(chart["labels"], ["2025-01", "2025-02", "2025-03"])
        self.assertEqual(chart["scheduled"], [4000.0, 7000.0, 6000.0])
        self.assertEqual(chart["split"]["collections_advance"], [0.0, 0.0, 500.0])
        self.assertContains(self.client.get(COLLECTIONS), 'id="collections-data"')

    def test_it_shows_the_principal_falling_due_in_the_next_30_60_and_90_days(self):
        self.assertEqual(
            self.due(),
            [
                (30, date(2025, 4, 30), 3500, 3),
                (60, date(2025, 5, 30), 3500, 3),
                (90, date(2025, 6, 29), 3500, 3),
            ],
        )
        self.assertEqual(
            self.due(as_of="2025-02-28"),
            [
                (30, date(2025, 3, 30), 6000, 2),
                (60, date(2025, 4, 29), 9000, 3),
                (90, date(2025, 5, 29), 9000, 3),
            ],
        )

    def test_an_earlier_date_ends_the_months_there(self):
        self.assertEqual(list(self.months(as_of="2025-02-28")), ["2025-01", "2025-02"])

    def test_a_date_inside_a_month_shows_that_month_to_date(self):
        snapshot_compute(as_of=date(2025, 3, 4))
        months = self.months(as_of="2025-03-04")
        self.assertEqual(list(months), ["2025-01", "2025-02", "2025-03 (to 04)"])
        # By 03-04: L6's 03-05 installment is not due yet, L6 paid 2,500 and L1 nothing.
        self.assertEqual(months["2025-03 (to 04)"]["scheduled"], None)
        self.assertEqual(months["2025-03 (to 04)"]["collected"], 2500)
        self.assertEqual(months["2025-03 (to 04)"]["current"], 1000)

    def test_an_entity_slice_changes_the_numbers(self):
        abf = self.months(dimension="company", member=ABF)
        self.assertEqual(abf["2025-01"]["scheduled"], 4000)  # L2
        self.assertEqual(abf["2025-03"]["scheduled"], None)  # nothing of ABF due in March
        self.assertEqual(abf["2025-03"]["collected"], 0)
        self.assertEqual(
            self.due(dimension="company", member=ABF)[0], (30, date(2025, 4, 30), 500, 1)
        )
        abt = self.months(dimension="company", member="ABT")
        self.assertEqual(abt["2025-03"]["collected"], 2500)
        self.assertEqual(abt["2025-02"]["scheduled"], 7000)


class CollectionExportTests(CollectionsTestCase):
    def csv_rows(self, **params) -> list[list[str]]:
        response = self.client.get(COLLECTIONS, {**params, "format": "csv"})
        self.assertEqual(response.status_code, 200)
        return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))

    def test_the_month_table_exports_newest_first(self):
        rows = self.csv_rows(table="months")
        self.assertEqual(
            rows[0][:5], ["month", "as_of", "scheduled", "collected", "collection_rate"]
        )
        self.assertEqual(rows[1][:4], ["2025-03", "2025-03-31", "6000.0", "2500.0"])
        self.assertEqual(rows[1][5:], ["1000.0", "1000.0", "500.0"])

    def test_the_falling_due_table_exports(self):
        rows = self.csv_rows(table="falling_due")
        self.assertEqual(
            rows[1:],
            [
                ["30", "2025-04-30", "3500.0", "3"],
                ["60", "2025-05-30", "3500.0", "3"],
                ["90", "2025-06-29", "3500.0", "3"],
            ],
        )
        response = self.client.get(COLLECTIONS, {"format": "xlsx", "table": "falling_due"})
        self.assertEqual(response.status_code, 200)
        self.assertTrue(
            response["Content-Disposition"].endswith('collections-falling_due-2025-03-31.xlsx"')
        )


class CollectionAccessTests(CollectionsTestCase):
    def test_managers_and_admins_see_it_in_the_navigation(self):
        for user in (self.manager, self.admin):
            self.client.force_login(user)
            response = self.client.get(reverse("kpis:overview"))
            self.assertContains(response, f'href="{COLLECTIONS}"')
            self.assertEqual(self.client.get(COLLECTIONS).status_code, 200)

    def test_other_roles_get_403_and_no_link(self):
        for user in (self.auditor, self.outsider):
            self.client.force_login(user)
            self.assertEqual(self.client.get(COLLECTIONS).status_code, 403, user)
        self.client.force_login(self.auditor)
        self.assertNotContains(self.client.get(reverse("compliance:audit")), COLLECTIONS)

    def test_anonymous_users_go_to_login(self):
        self.client.logout()
        response = self.client.get(COLLECTIONS)
        self.assertEqual(response.status_code, 302)
        self.assertTrue(response["Location"].startswith("/login/"))


class CollectionQueryTests(CollectionsTestCase):
    def test_its_query_count_does_not_grow_with_the_book(self):
        self.client.get(COLLECTIONS)  # warm caches (content types, session, the page cache)
        # Served again from this process's memory: session, user, permissions (one query,
        # abaco.backends), data version (another process reads the shared cache besides).
        with self.assertNumQueries(4):
            self.client.get(COLLECTIONS)
        more_loans(self.book, count=40)
        self.book.compute()
        # Computed: session, user, permissions; book sources; runs, data-through, loads the run
        # has not read, slices, KPI values.
        with self.settings(PAGE_CACHE_SECONDS=0), self.assertNumQueries(9):
            response = self.client.get(COLLECTIONS, {"basis": "restated"})
        self.assertEqual(response.context["s"].basis, "restated")
        # The extra loans' 03-05..03-24 installments of 400 fell due in March.
        self.assertEqual(response.context["c"].month.scheduled, 6000 + 40 * 400)
