"""The access log: who read or exported which book data, and every sign-in event.

An access entry is a ``JournalEntry`` of kind ``access`` (or ``sign_in``), not django-auditlog's
``ACCESS`` action: that action needs a model instance, while most reads here have none (dashboards,
drill-down lists, exports, failed sign-ins), and it has no place for the filters, row count, roles,
request id or API token an auditor asks about. Writing straight into the journal also means one
insert per page instead of two (a LogEntry and its journal copy).

Pages are covered declaratively: ``AccessLogMiddleware`` logs every successful GET of a view named
in ``LOGGED_VIEWS``; exports call ``access_record`` themselves with their row count (and mark the
request so the middleware does not log it twice); the API base view calls it with its token id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import user_logged_in, user_logged_out, user_login_failed
from django.db import models
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

from abaco.middleware import client_ip
from abaco.second_factor import second_factor_checked
from compliance.journal import journal_append
from compliance.models import JournalEntry

# url name -> (action, the URL keyword that is the object's id, the object's "app.model" label).
# Book data only: dashboards (with their filters and as-of), drill-down, loan, customer and batch
# pages, raw files, and the admin change views of book records.
LOGGED_VIEWS: dict[str, tuple[str, str, str]] = {
    "kpis:overview": ("view dashboard", "", ""),
    "kpis:risk": ("view dashboard", "", ""),
    "kpis:concentration": ("view dashboard", "", ""),
    "kpis:collections": ("view dashboard", "", ""),
    "kpis:loans": ("view list", "", ""),
    "kpis:loan": ("view", "pk", "loans.loan"),
    "kpis:insights": ("view dashboard", "", ""),
    "kpis:customer": ("view", "pk", "loans.customer"),
    "loans:batch_raw_file": ("download raw file", "pk", "loans.batch"),
    "compliance:batch": ("view", "pk", "loans.batch"),
    "admin:loans_loan_change": ("view", "object_id", "loans.loan"),
    "admin:loans_customer_change": ("view", "object_id", "loans.customer"),
    "admin:loans_batch_change": ("view", "object_id", "loans.batch"),
    "admin:loans_batch_diff": ("view tape diff", "pk", "loans.batch"),
    "admin:loans_installment_change": ("view", "object_id", "loans.installment"),
    "admin:loans_transaction_change": ("view", "object_id", "loans.transaction"),
    "admin:loans_loan_changelist": ("view list", "", ""),
    "admin:loans_customer_changelist": ("view list", "", ""),
    "admin:loans_batch_changelist": ("view list", "", ""),
    "admin:loans_installment_changelist": ("view list", "", ""),
    "admin:loans_transaction_changelist": ("view list", "", ""),
    # An upload's pages show its file's rows (the preview's first rows, the problems' values).
    "admin:loans_upload_change": ("view", "object_id", "loans.upload"),
    "admin:loans_upload_preview": ("view upload preview", "pk", "loans.upload"),
    "admin:loans_upload_rejects": ("download rejected rows", "pk", "loans.upload"),
}
# Query parameters that are paging, not filters.
NOT_FILTERS = {"page", "csrfmiddlewaretoken"}
LOGGED = "_access_logged"
SHOWN = "_access_shown"


def access_shown(request: HttpRequest, **shown: Any) -> None:
    """What a page resolved beyond its query (the as-of date and basis a dashboard opened at
    when none was asked for): recorded with the read, under ``extra``."""
    setattr(request, SHOWN, {**getattr(request, SHOWN, {}), **shown})


def object_label(obj: models.Model | str | None) -> str:
    """``app.model:id`` for a model instance; strings are taken as already written so."""
    if obj is None:
        return ""
    if isinstance(obj, str):
        return obj
    return f"{obj._meta.label_lower}:{obj.pk}"


def access_record(
    *,
    request: HttpRequest,
    action: str,
    obj: models.Model | str | None = None,
    filters: Mapping[str, Any] | None = None,
    rows: int | None = None,
    token_id: str | int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Log one read or export of book data by ``request``'s user (or API token)."""
    setattr(request, LOGGED, True)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        user = None
    if filters is None:
        filters = {k: v for k, v in request.GET.items() if k not in NOT_FILTERS}
    journal_append(
        kind=JournalEntry.Kind.ACCESS,
        action=action,
        by=user,
        object=object_label(obj),
        path=request.path,
        rows=rows,
        ip=client_ip(request),
        request_id=getattr(request, "id", ""),
        filters=dict(filters),
        token_id=str(token_id) if token_id is not None else "",
        extra={**getattr(request, SHOWN, {}), **(extra or {})},
    )


def security_event_record(
    *,
    action: str,
    request: HttpRequest | None = None,
    user: Any = None,
    username: str = "",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Sign-in, sign-out, failed sign-in, lockout, second-factor events (django-axes and the 2FA
    flow call this at merge with ``action`` such as "lockout", "2fa ok", "2fa failed")."""
    journal_append(
        kind=JournalEntry.Kind.SIGN_IN,
        action=action,
        actor_id=user.pk if user is not None and user.pk else None,
        actor=user.get_username() if user is not None else username[:150],
        path=request.path if request is not None else "",
        ip=client_ip(request) if request is not None else "",
        request_id=getattr(request, "id", "") if request is not None else "",
        extra=dict(extra or {}),
    )


@receiver(user_logged_in, dispatch_uid="compliance.sign_in")
def _signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    security_event_record(action="sign in", request=request, user=user)


@receiver(user_logged_out, dispatch_uid="compliance.sign_out")
def _signed_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        security_event_record(action="sign out", request=request, user=user)


@receiver(user_login_failed, dispatch_uid="compliance.sign_in_failed")
def _sign_in_failed(
    sender: Any, credentials: Mapping[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # The credentials dict is already cleansed of the password by Django; keep only the name.
    security_event_record(
        action="sign in failed", request=request, username=str(credentials.get("username", ""))
    )


class AccessLogMiddleware:
    """Logs each successful read of a view in ``LOGGED_VIEWS`` that did not log itself."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if (
            match is None
            or request.method != "GET"
            # A 304 is a read too: the browser shows the page it holds, now revalidated.
            or response.status_code not in (200, 304)
            or getattr(request, LOGGED, False)
        ):
            return response
        logged = LOGGED_VIEWS.get(match.view_name)
        if logged is None:
            return response
        action, key, label = logged
        obj = f"{label}:{match.kwargs[key]}" if key and key in match.kwargs else ""
        access_record(request=request, action=action, obj=obj)
        return response


def export_recorded(
    rows: Iterable[Any],
    *,
    request: HttpRequest,
    action: str = "export",
    extra: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Pass an export's rows through and log the export with its row count once all were sent
    (a download cut short is logged with the rows that left)."""
    # Marked now, not when streaming starts: the middleware sees the response before its rows.
    setattr(request, LOGGED, True)

    def counted() -> Iterator[Any]:
        count = 0
        try:
            for row in rows:
                count += 1
                yield row
        finally:
            access_record(request=request, action=action, rows=count, extra=extra)

    return counted()


@receiver(user_locked_out, dispatch_uid="compliance.lockout")
def _locked_out(
    sender: Any, request: HttpRequest | None, username: str, ip_address: str, **kwargs: Any
) -> None:
    security_event_record(
        action="lockout", request=request, username=username or "", extra={"ip": ip_address}
    )


@receiver(second_factor_checked, dispatch_uid="compliance.second_factor")
def _second_factor(
    sender: Any, request: HttpRequest, user: Any, ok: bool, how: str, **kwargs: Any
) -> None:
    security_event_record(
        action="2fa ok" if ok else "2fa failed", request=request, user=user, extra={"how": how}
    )
