"""Who may call what: every operation of the OpenAPI schema, for every role, with and without
the operation's scope. The table is written out by hand below; an operation the schema has and
the table lacks fails the test, so a new endpoint cannot ship without its entry."""

from __future__ import annotations

import json

from abaco.roles import Role
from api.models import Scope
from integrations.models import PipelineRun
from loans.models import Batch, Upload
from tests.api.base import ApiTestCase
from tests.kpis.books import dashboard_book

BOOK = {Role.UPLOADER, Role.STEWARD, Role.MANAGER, Role.AUDITOR, Role.ADMIN, Role.API_CLIENT}
UPLOADS = {Role.UPLOADER, Role.STEWARD, Role.ADMIN}
# Staff read the dashboards to check what a load did (issue 17), so the KPIs too.
KPIS = {Role.UPLOADER, Role.STEWARD, Role.MANAGER, Role.ADMIN, Role.API_CLIENT}
PIPELINES = {Role.UPLOADER, Role.STEWARD, Role.MANAGER, Role.ADMIN}
AUDIT = {Role.AUDITOR, Role.ADMIN}

# operationId -> (the scope it needs, the roles whose permissions allow it)
MATRIX: dict[str, tuple[str, set[Role]]] = {
    "customers_list": (Scope.READ_BOOK, BOOK),
    "customers_retrieve": (Scope.READ_BOOK, BOOK),
    "loans_list": (Scope.READ_BOOK, BOOK),
    "loans_retrieve": (Scope.READ_BOOK, BOOK),
    "loans_installments_list": (Scope.READ_BOOK, BOOK),
    "loans_transactions_list": (Scope.READ_BOOK, BOOK),
    "loans_states_list": (Scope.READ_BOOK, BOOK),
    "loans_changes_list": (Scope.READ_BOOK, UPLOADS),
    "batches_list": (Scope.READ_BOOK, BOOK),
    "batches_retrieve": (Scope.READ_BOOK, BOOK),
    "uploads_list": (Scope.READ_BOOK, UPLOADS),
    "uploads_retrieve": (Scope.READ_BOOK, UPLOADS),
    "uploads_rejects_retrieve": (Scope.READ_BOOK, UPLOADS),
    "uploads_create": (Scope.WRITE_UPLOADS, UPLOADS),
    "uploads_load_create": (Scope.WRITE_UPLOADS, UPLOADS),
    "kpis_definitions_list": (Scope.READ_KPIS, KPIS),
    "kpis_series_list": (Scope.READ_KPIS, KPIS),
    "kpis_snapshots_list": (Scope.READ_KPIS, KPIS),
    "kpis_snapshots_retrieve": (Scope.READ_KPIS, KPIS),
    "kpis_snapshots_values_list": (Scope.READ_KPIS, KPIS),
    "kpis_snapshots_roll_rates_list": (Scope.READ_KPIS, KPIS),
    "kpis_snapshots_vintages_list": (Scope.READ_KPIS, KPIS),
    "kpis_snapshots_top_borrowers_list": (Scope.READ_KPIS, KPIS),
    "pipelines_runs_list": (Scope.READ_KPIS, PIPELINES),
    "pipelines_runs_retrieve": (Scope.READ_KPIS, PIPELINES),
    "audit_changes_list": (Scope.READ_AUDIT, AUDIT),
    "audit_access_list": (Scope.READ_AUDIT, AUDIT),
}


class ScopeRoleMatrixTests(ApiTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        book = dashboard_book()
        runs = book.compute()
        upload = Upload.objects.create(file="uploads/x.zip", created_by=cls.uploader)
        run = PipelineRun.objects.create(job="kpi_daily", for_date="2025-03-31", trigger="command")
        cls.values = {
            "customer_id": "C1",
            "loan_id": "L1",
            "id": {
                "batches": Batch.objects.first().pk,
                "uploads": upload.pk,
                "kpis": max(r.pk for r in runs.values()),
                "pipelines": run.pk,
            },
        }
        cls.roles = {
            Role.UPLOADER: cls.uploader,
            Role.STEWARD: cls.steward,
            Role.MANAGER: cls.manager,
            Role.AUDITOR: cls.auditor,
            Role.ADMIN: cls.admin,
            Role.API_CLIENT: cls.client_user,
            None: cls.outsider,
        }

    def operations(self):
        schema = json.loads(self.client.get("/api/schema/?format=json").content)
        for path, methods in schema["paths"].items():
            for method, operation in methods.items():
                yield path, method, operation

    def url(self, path: str) -> str:
        url = path.replace("{customer_id}", self.values["customer_id"])
        url = url.replace("{loan_id}", self.values["loan_id"])
        if "{id}" in url:
            url = url.replace("{id}", str(self.values["id"][path.split("/")[3]]))
        return url

    def call(self, method: str, url: str, token: str):
        query = "?code=par_30" if "series" in url else ""
        headers = self.bearer(token)
        if method == "post":
            return self.client.post(url, {}, headers=headers)
        return self.client.get(url + query, headers=headers)

    def test_every_operation_has_an_entry(self):
        ids = {op["operationId"] for _, _, op in self.operations()}
        self.assertEqual(ids - set(MATRIX), set(), "operations without a matrix entry")
        self.assertEqual(set(MATRIX) - ids, set(), "matrix entries for no operation")

    def test_each_role_with_and_without_the_scope_gets_what_the_table_says(self):
        checked = 0
        for path, method, operation in self.operations():
            scope, allowed = MATRIX[operation["operationId"]]
            url = self.url(path)
            others = [s for s in Scope.values if s != scope]
            for role, user in self.roles.items():
                for scopes, with_scope in (([scope], True), (others, False)):
                    response = self.call(method, url, self.token(user, scopes))
                    permitted = with_scope and role in allowed
                    with self.subTest(op=operation["operationId"], role=role, scope=with_scope):
                        if permitted:
                            self.assertNotIn(
                                response.status_code, (401, 403), response.content[:300]
                            )
                            self.assertLess(response.status_code, 500)
                        else:
                            self.assertEqual(response.status_code, 403, response.content[:300])
                    checked += 1
        self.assertEqual(checked, len(MATRIX) * len(self.roles) * 2)
