"""Issue 18, item 7: who gets what at every URL, as data. ``SITE`` has one row per URL pattern of
the resolver (the admin's own pages included); ``ADMIN`` one row per registered admin model with
its changelist, add, change, delete and history pages. A test built from the resolver fails when
a pattern or an admin model is missing here: a new page is added with its row.

Each row's codes are for the users of ``USERS`` in order: ``L`` = sent to the login page,
``R`` = another redirect, a number = that status. Regenerate the observed codes with
``MATRIX_PRINT=1 pytest tests/abaco/test_url_matrix.py -k observed -s`` and review every change.
"""

from __future__ import annotations

import os
import re
import sys

from auditlog.models import LogEntry
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_q.models import OrmQ, Schedule, Task

from api.tokens import api_token_create
from compliance.journal import _append_now
from compliance.models import FieldClassification, JournalEntry, LegalHold
from loans.models import ColumnMap, Upload
from tests.base import CastTestCase
from tests.factories import (
    batch_create,
    customer_create,
    installment_create,
    loan_create,
    transaction_create,
)

USERS = ("anonymous", "uploader", "steward", "manager", "auditor", "admin", "outsider")

# pattern -> codes for USERS (anonymous, uploader, steward, manager, auditor, admin, no group)
SITE: dict[str, str] = {
    "": "L R R R R R 403",
    "healthz": "200 200 200 200 200 200 200",
    "favicon.ico": "R R R R R R R",
    "readyz": "503 503 503 503 503 503 503",
    "metrics": "403 403 403 403 403 403 403",
    "login/": "200 R R R R R R",
    "login/verify/": "L R R R R R R",
    "login/enrol/": "L R R R R R R",
    "logout/": "405 405 405 405 405 405 405",
    "dashboard/": "L 200 200 200 403 200 403",
    "dashboard/risk/": "L 200 200 200 403 200 403",
    "dashboard/concentration/": "L 200 200 200 403 200 403",
    "dashboard/collections/": "L 200 200 200 403 200 403",
    "dashboard/loans/": "L 200 200 200 403 200 403",
    "dashboard/loans/<int:pk>/": "L 200 200 200 200 200 403",
    "dashboard/insights/": "L 200 200 200 403 200 403",
    "dashboard/insights/regenerate/": "405 405 405 405 405 405 405",
    "dashboard/customers/<int:pk>/": "L 200 200 200 200 200 403",
    "audit/": "L 403 403 403 200 200 403",
    "audit/export.csv": "L 403 403 403 200 200 403",
    "audit/export": "L 403 403 403 200 200 403",
    "audit/journal/": "L 403 403 403 200 200 403",
    "audit/imports/": "L 403 403 403 200 200 403",
    "audit/imports/<int:pk>/": "L 403 403 403 200 200 403",
    "pipelines/": "L 200 200 200 403 200 403",
    "pipelines/recompute/": "405 405 405 405 405 405 405",
    "pipelines/<slug:name>/run/": "405 405 405 405 405 405 405",
    "files/batches/<int:pk>/raw/": "L 404 404 403 404 404 403",
    "admin/login/": "L L L 403 403 L 403",  # signed in without the admin: refused, not looped
    "admin/": "L 200 200 L L 200 L",
    "admin/logout/": "R 405 405 R R 405 R",
    "admin/password_change/": "L 200 200 L L 200 L",
    "admin/password_change/done/": "L 200 200 L L 200 L",
    "admin/autocomplete/": "L 403 403 L L 403 L",
    "admin/jsi18n/": "L 200 200 L L 200 L",
    "admin/r/<path:content_type_id>/<path:object_id>/": "L 404 404 L L 404 L",
    "admin/otp_totp/totpdevice/<int:pk>/config/": "L 403 403 L L 200 L",
    "admin/otp_totp/totpdevice/<int:pk>/qrcode/": "L 403 403 L L 503 L",
    "admin/loans/batch/<int:pk>/diff/": "L 404 200 L L 200 L",
    "admin/loans/batch/review/": "L 200 200 L L 200 L",
    "admin/loans/upload/<int:pk>/preview/": "L 404 200 L L 200 L",
    "admin/loans/upload/<int:pk>/progress/": "L 404 200 L L 200 L",
    "admin/loans/upload/<int:pk>/rejects/": "L 404 404 L L 404 L",
    "admin/auth/user/<id>/password/": "L 403 403 L L 200 L",
    "admin/^(?P<app_label>auth|auditlog|axes|otp_totp|otp_static|api|loans|django_q|compliance)/$": "L 200 200 L L 200 L",
    "admin/(?P<url>.*)$": "L 404 404 L L 404 L",
    "api/schema/": "200 200 200 200 200 200 200",
    "api/docs/": "200 200 200 200 200 200 200",
    "api/v1/customers/": "401 200 200 200 200 200 403",
    "api/v1/customers/<str:customer_id>/": "401 404 404 404 404 404 403",
    "api/v1/loans/<str:loan_id>/": "401 404 404 404 404 404 403",
    "api/v1/loans/<str:loan_id>/installments/": "401 404 404 404 404 404 403",
    "api/v1/loans/<str:loan_id>/transactions/": "401 404 404 404 404 404 403",
    "api/v1/loans/<str:loan_id>/changes/": "401 404 404 403 403 404 403",
    "api/v1/batches/": "401 200 200 200 200 200 403",
    "api/v1/batches/<int:pk>/": "401 200 200 200 200 200 403",
    "api/v1/uploads/": "401 200 200 403 403 200 403",
    "api/v1/uploads/<int:pk>/": "401 404 200 403 403 200 403",
    "api/v1/uploads/<int:pk>/load/": "401 405 405 403 403 405 403",
    "api/v1/uploads/<int:pk>/rejects/": "401 404 404 403 403 404 403",
    "api/v1/loans/": "401 200 200 200 200 200 403",
    "api/v1/loans/<str:loan_id>/states/": "401 404 404 404 404 404 403",
    "api/v1/kpis/definitions/": "401 200 200 200 403 200 403",
    "api/v1/kpis/series/": "401 400 400 400 403 400 403",
    "api/v1/kpis/snapshots/": "401 200 200 200 403 200 403",
    "api/v1/kpis/snapshots/<int:pk>/": "401 404 404 404 403 404 403",
    "api/v1/kpis/snapshots/<int:pk>/values/": "401 404 404 404 403 404 403",
    "api/v1/kpis/snapshots/<int:pk>/roll-rates/": "401 404 404 404 403 404 403",
    "api/v1/kpis/snapshots/<int:pk>/vintages/": "401 404 404 404 403 404 403",
    "api/v1/kpis/snapshots/<int:pk>/top-borrowers/": "401 404 404 404 403 404 403",
    "api/v1/pipelines/runs/": "401 200 200 200 403 200 403",
    "api/v1/pipelines/runs/<int:pk>/": "401 404 404 404 403 404 403",
    "api/v1/audit/changes/": "401 403 403 403 200 200 403",
    "api/v1/audit/access/": "401 403 403 403 200 200 403",
}


# admin model -> page -> codes for USERS
ADMIN: dict[str, dict[str, str]] = {
    "api.apitoken": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 200 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 403 L L 200 L",
    },
    "auditlog.logentry": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 403 L L 200 L",
    },
    "auth.group": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 200 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 403 L L 200 L",
    },
    "auth.user": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 200 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 403 L L 200 L",
    },
    "axes.accessattempt": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 403 L L 200 L",
    },
    "axes.accessfailurelog": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 403 L L 200 L",
    },
    "axes.accesslog": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 403 L L 200 L",
    },
    "compliance.fieldclassification": {
        "changelist": "L 403 200 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 200 L L 200 L",
    },
    "compliance.journalentry": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 403 L L 200 L",
    },
    "compliance.legalhold": {
        "changelist": "L 403 200 L L 200 L",
        "add": "L 403 200 L L 200 L",
        "history": "L 403 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 200 L L 200 L",
    },
    "django_q.failure": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 403 L L 200 L",
    },
    "django_q.ormq": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 403 L L 200 L",
    },
    "django_q.schedule": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 403 L L 200 L",
    },
    "django_q.success": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 403 403 L L 200 L",
    },
    "loans.batch": {
        "changelist": "L 200 200 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L R 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L R 200 L L 200 L",
    },
    "loans.columnmap": {
        "changelist": "L 403 200 L L 200 L",
        "add": "L 403 200 L L 200 L",
        "history": "L 403 200 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 200 L L 200 L",
    },
    "loans.customer": {
        "changelist": "L 200 200 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 200 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 200 200 L L 200 L",
    },
    "loans.installment": {
        "changelist": "L 200 200 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 200 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 200 200 L L 200 L",
    },
    "loans.loan": {
        "changelist": "L 200 200 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 200 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 200 200 L L 200 L",
    },
    "loans.transaction": {
        "changelist": "L 200 200 L L 200 L",
        "add": "L 403 403 L L 403 L",
        "history": "L 200 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L 200 200 L L 200 L",
    },
    "loans.upload": {
        "changelist": "L 200 200 L L 200 L",
        "add": "L 200 200 L L 200 L",
        "history": "L R 200 L L 200 L",
        "delete": "L 403 403 L L 403 L",
        "change": "L R 200 L L 200 L",
    },
    "otp_static.staticdevice": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 200 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 403 L L 200 L",
    },
    "otp_totp.totpdevice": {
        "changelist": "L 403 403 L L 200 L",
        "add": "L 403 403 L L 200 L",
        "history": "L 403 403 L L 200 L",
        "delete": "L 403 403 L L 200 L",
        "change": "L 403 403 L L 200 L",
    },
}


MODEL_PAGES = {
    "changelist": "",
    "add": "add/",
    "change": "<path:object_id>/change/",
    "delete": "<path:object_id>/delete/",
    "history": "<path:object_id>/history/",
}
# Django's own redirect from admin/<app>/<model>/<id>/ to its change page (one of MODEL_PAGES).
MODEL_REDIRECT = "<path:object_id>/"


def resolver_patterns(resolver=None, prefix: str = ""):
    for entry in (resolver or get_resolver()).url_patterns:
        if isinstance(entry, URLResolver):
            yield from resolver_patterns(entry, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern)


def admin_prefixes() -> dict[str, str]:
    return {
        f"admin/{m._meta.app_label}/{m._meta.model_name}/": m._meta.label_lower
        for m in admin.site._registry
    }


def code(response) -> str:
    if response.status_code in (301, 302):
        return "L" if response["Location"].split("?")[0] in ("/login/", "/admin/login/") else "R"
    return str(response.status_code)


def journal_row() -> int:
    """One journal entry, written now (journal_append waits for a commit that never comes here)."""
    at = timezone.now()
    body = {"at": at.isoformat(), "kind": "access", "action": "view", "actor_id": None}
    _append_now({**body, "actor": "", "object": "", "path": "", "rows": None}, at)
    return JournalEntry.objects.latest("id").pk


# The object behind a site page's <int:pk>, by the page's path; any other pk is 0 (no object).
SITE_OBJECTS = {
    "dashboard/loans/": "loans.loan",
    "dashboard/customers/": "loans.customer",
    "files/batches/": "loans.batch",
    "audit/imports/": "loans.batch",
    "api/v1/batches/": "loans.batch",
    "api/v1/uploads/": "loans.upload",
}


class UrlMatrixTests(CastTestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        batch = batch_create()
        customer = customer_create(batch=batch)
        loan = loan_create(customer=customer, batch=batch)
        now = timezone.now()
        cls.objects = {
            "loans.batch": batch.pk,
            "loans.customer": customer.pk,
            "loans.loan": loan.pk,
            "loans.installment": installment_create(loan=loan, batch=batch).pk,
            "loans.transaction": transaction_create(loan=loan, batch=batch).pk,
            "loans.columnmap": ColumnMap.objects.create(source="lender-gt").pk,
            "loans.upload": Upload.objects.create(
                file=SimpleUploadedFile("t.csv", b"x"), created_by=cls.steward
            ).pk,
            "auth.user": cls.manager.pk,
            "auth.group": Group.objects.first().pk,
            "auditlog.logentry": LogEntry.objects.first().pk,
            "axes.accessattempt": AccessAttempt.objects.create(
                username="x", ip_address="192.0.2.1", user_agent="t", failures_since_start=1
            ).pk,
            "axes.accessfailurelog": AccessFailureLog.objects.create(
                username="x", ip_address="192.0.2.1", user_agent="t"
            ).pk,
            "axes.accesslog": AccessLog.objects.create(
                username="x", ip_address="192.0.2.1", user_agent="t"
            ).pk,
            "django_q.schedule": Schedule.objects.bulk_create(
                [Schedule(name="kpi_daily", func="integrations.tasks.pipeline_task")]
            )[0].pk,
            "django_q.success": Task.objects.create(
                id="s1", name="s", func="f", started=now, stopped=now, success=True
            ).pk,
            "django_q.failure": Task.objects.create(
                id="f1", name="f", func="f", started=now, stopped=now, success=False
            ).pk,
            "django_q.ormq": OrmQ.objects.create(key="abaco", payload="x").pk,
            "otp_totp.totpdevice": TOTPDevice.objects.create(user=cls.admin, name="t").pk,
            "otp_static.staticdevice": StaticDevice.objects.create(user=cls.admin, name="s").pk,
        }
        cls.objects.update(
            {
                "api.apitoken": api_token_create(user=cls.admin, scopes=["read:book"])[0].pk,
                "compliance.fieldclassification": FieldClassification.objects.first().pk,
                "compliance.legalhold": LegalHold.objects.create(
                    object=f"loans.customer:{customer.pk}", reason="matrix", created_by=cls.admin
                ).pk,
                "compliance.journalentry": journal_row(),
            }
        )
        cls.loan_pk = loan.pk
        cls.customer_ct = ContentType.objects.get_for_model(customer).pk

    def url_for(self, pattern: str, label: str | None = None) -> str:
        url = pattern
        for app in ("(?P<app_label>", "(?P<url>"):
            if app in url:
                url = url.split("^")[0] + ("loans/" if "app_label" in app else "no-such-page/")
        if label is None:  # the site's own pages: each pk names the object its page shows
            site_label = next((v for k, v in SITE_OBJECTS.items() if url.startswith(k)), None)
            url = url.replace("<int:pk>", str(self.objects.get(site_label, 0)))
        url = url.replace("<slug:name>", "kpi_daily")
        url = url.replace("<path:content_type_id>", str(self.customer_ct))
        obj = self.objects.get(label, self.objects["loans.customer"])
        for param in ("<path:object_id>", "<int:pk>", "<id>"):
            url = url.replace(param, str(obj))
        return "/" + re.sub(r"\$$", "", url)

    def observe(self) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        clients = {"anonymous": Client()}
        for name in USERS[1:]:
            clients[name] = Client()
            clients[name].force_login(getattr(self, name))
        prefixes = admin_prefixes()
        site, models = {}, {}
        for pattern in resolver_patterns():
            prefix = next((p for p in prefixes if pattern.startswith(p)), None)
            tail = pattern[len(prefix) :] if prefix else ""
            if prefix and (tail in MODEL_PAGES.values() or tail == MODEL_REDIRECT):
                if tail == MODEL_REDIRECT:
                    continue
                label = prefixes[prefix]
                page = next(k for k, v in MODEL_PAGES.items() if v == tail)
                url = self.url_for(pattern, label)
                models.setdefault(label, {})[page] = " ".join(
                    code(clients[u].get(url)) for u in USERS
                )
                continue
            url = self.url_for(pattern, prefixes.get(prefix or ""))
            site[pattern] = " ".join(code(clients[u].get(url)) for u in USERS)
        return site, models

    def test_every_pattern_and_admin_model_has_a_row(self):
        prefixes = admin_prefixes()
        missing = []
        for pattern in resolver_patterns():
            prefix = next((p for p in prefixes if pattern.startswith(p)), None)
            tail = pattern[len(prefix) :] if prefix else None
            if prefix and tail in (*MODEL_PAGES.values(), MODEL_REDIRECT):
                continue
            if pattern not in SITE:
                missing.append(pattern)
        missing += [f"admin model {label}" for label in prefixes.values() if label not in ADMIN]
        self.assertEqual(missing, [], "add a row for each to tests/abaco/test_url_matrix.py")

    def test_every_user_gets_what_the_table_says_at_every_url(self):
        site, models = self.observe()
        if os.environ.get("MATRIX_PRINT"):
            lines = ["SITE = {", *(f"    {k!r}: {v!r}," for k, v in site.items()), "}"]
            lines.append("ADMIN = {")
            for label, pages in sorted(models.items()):
                lines += [
                    f"    {label!r}: {{",
                    *(f"        {p!r}: {v!r}," for p, v in pages.items()),
                ]
                lines.append("    },")
            sys.stdout.write("\n".join([*lines, "}", ""]))
        size = sum(len(v.split()) for v in site.values()) + sum(
            len(v.split()) for pages in models.values() for v in pages.values()
        )
        for pattern, expected in SITE.items():
            if pattern in site:
                with self.subTest(pattern=pattern):
                    self.assertEqual(site[pattern], expected)
        for label, pages in ADMIN.items():
            for page, expected in pages.items():
                with self.subTest(model=label, page=page):
                    self.assertEqual(models.get(label, {}).get(page), expected)
        self.assertGreater(size, 900)  # users x (patterns + admin pages)
