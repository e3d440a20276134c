"""Dashboard pages computed once per snapshot state, served from the shared cache (issue 21).

What a dashboard page shows changes only when a snapshot run is stored, restated or deleted, or
when a load changes the data status; between those, its selector's result (the computed
context) for a (page, filters, clearance) is the same for everyone who may see it. So a page's
selector runs once and its result is kept in the shared cache (``CACHES["default"]``: the
database cache, Redis when configured) under a key that names everything the page depends on:

- the page and its parsed filters (as-of date, basis, slice, drill-down filter, sort, cursor);
- the viewer's clearance: staff or not, and each permission a cached template asks about
  (``CONTENT_PERMISSIONS``: PII, exports, the links a role may follow);
- the *data version*: one cheap query over the runs (their count, newest id and computation
  time, and the runs' id sequence, which any recomputation advances even when its run is then
  dropped because the numbers stand), over the batches (count, newest id, latest timestamps,
  rows read), and the newest audit-log entry of a loan, customer, installment or transaction
  (an edit by hand in the admin; not of the scheduler's own saves, every 15 minutes) and of
  the steward's reviews: anything that stores, restates or deletes a run, loads data, edits a
  record or reviews a change moves it, so a stale entry is never read again (it expires,
  ``PAGE_CACHE_SECONDS``);
- the code version: a hash of the selectors', definitions', template tags' and templates'
  source, so a deploy never serves a page shaped by older code.

What is kept is the page rendered once (``page_render``): its title and content blocks as HTML,
with a slot for what is per user inside them (the overview's insight, with its button and CSRF
token), and, for a dashboard, the few facts the per-request parts need (``Shown``). The loan
and customer pages are kept the same way: what they show (the record, its schedule and cash,
its state in each stored run, its change history) moves only with the data version. Each
request renders only the site's chrome around it: the user's name, permissions, CSRF token,
messages, the data age and the access log write stay per request. Browsers get an ``ETag``
(the key plus the user, the user's CSRF secret and the permissions the chrome shows) and a
``304`` when nothing changed. Exports (``?format=``) are never cached.

A second level spares a user's repeated request even the chrome: each process keeps the whole
page it last served under that ETag and the local date (the chrome's data age counts days) in
its own memory (``CACHES["pages"]``, Django's local-memory cache, ``PAGE_CACHE_LOCAL_ENTRIES``
pages at most), so a hit costs no render and no read of the shared cache. Its CSRF tokens are
kept as a placeholder and masked afresh for each response, as Django does; what each request
adds (the overview's insight, the access log's note of the snapshot shown) is added after it.
A request with messages to show is rendered, not kept.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import caches
from django.db import connections, router
from django.http import HttpRequest, HttpResponse, HttpResponseNotModified
from django.middleware.csrf import get_token
from django.template import loader
from django.template.context import make_context
from django.template.loader_tags import BlockNode
from django.test.signals import template_rendered
from django.utils import timezone
from django.utils.safestring import mark_safe

from kpis.models import SnapshotRun

T = TypeVar("T")

CACHE_ALIAS = "default"
# Whole pages as this process served them (the second level: see the module's docstring).
SERVED_ALIAS = "pages"
KEY_PREFIX = "kpis.page"
# A form's CSRF token in a kept page, masked afresh for each response (never served as kept).
CSRF_FIELD = re.compile(r'(name="csrfmiddlewaretoken" value=")[^"]*(")')
CSRF_SLOT = "<!-- csrf -->"

# What the cached pages are made of: a change to any of these files changes every key.
_SOURCES = (
    "kpis/selectors",
    "kpis/templatetags",
    "kpis/definitions.py",
    "kpis/models.py",
    "kpis/pagecache.py",
    "kpis/views.py",
    "templates/kpis",
)

# Where a page's content leaves room for its per-user part (kpis/overview.html).
INSIGHT_SLOT = "<!-- insight: rendered per request -->"


@dataclass(frozen=True)
class Shown:
    """What a page showed, for the parts rendered per request (the insight and its form, the
    data age, the access log): small, so a cached page is read back quickly."""

    run: int | None
    as_of: date | None
    basis: str
    dimension: str
    member: str
    qs: str
    data_through: date | None

    @property
    def as_of_iso(self) -> str:
        return self.as_of.isoformat() if self.as_of else ""


@dataclass(frozen=True)
class PageBody:
    """A page rendered once: its title and content blocks (HTML) and what it showed (for a
    loan or customer page, which has no selection: the book's data-through date it was
    rendered with, so the chrome's "Data through" line needs no query of its own)."""

    title: str
    content: str
    shown: Shown | None
    data_through: date | None = None


def page_render(request: HttpRequest, template_name: str, context: dict[str, Any]) -> PageBody:
    """The title and content blocks of a page template that extends the site's base, rendered
    with the request's context processors, and what its selection ``s`` showed (a dashboard's;
    a loan or customer page has none)."""
    template = loader.get_template(template_name).template  # type: ignore[attr-defined]
    blocks = {node.name: node for node in template.nodelist.get_nodes_by_type(BlockNode)}
    bound = make_context({**context, "insight_slot": mark_safe(INSIGHT_SLOT)}, request)
    with bound.bind_template(template):
        # As Django's own render announces it (the test client records the context from it).
        template_rendered.send(sender=template, template=template, context=bound)
        title, content = (blocks[name].nodelist.render(bound) for name in ("title", "content"))
    s = context.get("s")
    shown = None
    if s is not None:
        shown = Shown(
            run=s.run.pk if s.run is not None else None,
            as_of=s.as_of,
            basis=s.basis,
            dimension=s.dimension,
            member=s.member,
            qs=s.qs,
            data_through=s.data_through,
        )
    return PageBody(title=str(title), content=str(content), shown=shown)


@cache
def code_version() -> str:
    digest = hashlib.sha256()
    root = Path(settings.BASE_DIR)
    for source in _SOURCES:
        path = root / source
        files = path.rglob("*") if path.is_dir() else [path]
        for file in sorted(f for f in files if f.suffix in (".py", ".html")):
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def data_version() -> str:
    """The runs' and loads' state, as a string that changes whenever a page could."""
    # Where the page's data is read (the replica when routed): a version read on the primary
    # while the data came from a lagging replica would cache old numbers under a new key.
    with connections[router.db_for_read(SnapshotRun)].cursor() as cursor:
        # kpis/migrations/0014: one round trip, and a PL/pgSQL function keeps its plan for the
        # connection's life (planned each time, it took longer to plan than to run). The runs'
        # id sequence moves with every run created, even one rolled back or deleted in the same
        # transaction (read by its function: the pg_sequences view cost more than the rest).
        cursor.execute("SELECT kpis_data_version()")
        return str(cursor.fetchone()[0])


# Every permission a cached page's content asks about (``perms.…`` in templates/kpis, not the
# chrome): PII, exports, the empty state's upload link, the links to the pipelines, the
# dashboards, the audit pages and raw files. tests/kpis/test_pagecache.py checks the templates.
CONTENT_PERMISSIONS = (
    "loans.view_pii",
    "kpis.export_data",
    "loans.add_upload",
    "integrations.view_pipelines",
    "kpis.view_dashboard",
    "compliance.view_audit",
    "loans.view_raw_file",
)


def clearance(request: HttpRequest) -> tuple[bool, ...]:
    """The viewer's rights that change a page's content (not its chrome): the permissions of
    ``CONTENT_PERMISSIONS`` and staff (batch links)."""
    user = request.user
    return (*(user.has_perm(perm) for perm in CONTENT_PERMISSIONS), bool(user.is_staff))


def page_key(page: str, params: dict[str, Any], request: HttpRequest) -> str:
    """The cache key of a page's result (see the module's docstring)."""
    parts = repr((page, sorted(params.items()), clearance(request), data_version(), code_version()))
    return f"{KEY_PREFIX}:{hashlib.sha256(parts.encode()).hexdigest()}"


def _etag(key: str, request: HttpRequest) -> str:
    """The response's validator: the page's key and what the chrome shows per user."""
    user = request.user
    chrome = (
        key,
        user.pk,
        user.get_username(),
        csrf_secret(request),
        user.has_perm("compliance.view_audit"),
        user.has_perm("integrations.view_pipelines"),
    )
    return '"' + hashlib.sha256(repr(chrome).encode()).hexdigest()[:32] + '"'


def csrf_secret(request: HttpRequest) -> str:
    """The CSRF secret the page's forms are signed with (made now when the browser has none,
    as the page's sign-out form would)."""
    get_token(request)
    return str(request.META.get("CSRF_COOKIE", ""))


def _not_modified(request: HttpRequest, etag: str) -> bool:
    sent = request.headers.get("If-None-Match", "")
    return etag in [tag.strip().removeprefix("W/") for tag in sent.split(",")]


def cached_page(
    request: HttpRequest,
    *,
    page: str,
    params: dict[str, Any],
    compute: Callable[[], PageBody],
    render: Callable[[PageBody], str],
    finish: Callable[[str, PageBody], str],
) -> HttpResponse:
    """The page of ``compute()``'s body: ``render(body)`` is the whole page (the site's chrome
    around it) for this user, ``finish(html, body)`` adds what each request adds (from the
    body's ``shown`` and ``data_through``, not its HTML). The body comes from the shared cache
    (computed on a miss), the rendered page from this process's memory when this user was
    served it today. A request whose browser holds the current page gets a 304."""
    seconds = settings.PAGE_CACHE_SECONDS
    if seconds <= 0 or request.method != "GET":
        result = compute()
        return HttpResponse(finish(render(result), result))
    key = page_key(page, params, request)
    etag = _etag(key, request)
    messages = _has_messages(request)
    if _not_modified(request, etag) and not messages:
        response: HttpResponse = HttpResponseNotModified()
    else:

        def whole() -> tuple[str, PageBody]:
            store = caches[CACHE_ALIAS]
            body = store.get(key)
            if body is None:
                body = compute()
                store.set(key, body, seconds)
            # finish() needs what the page showed, not its HTML: kept without it.
            return render(body), replace(body, title="", content="")

        if messages:  # shown once: never kept
            html, body = whole()
        else:
            html, body = _served(request, f"{etag}:{timezone.localdate().isoformat()}", whole)
        response = HttpResponse(finish(html, body))
    response["ETag"] = etag
    # Revalidate every time: the page is the user's own, and may change with the next snapshot.
    response["Cache-Control"] = "private, no-cache"
    return response


def served_part(
    request: HttpRequest, key: Callable[[], tuple[Any, ...]], render: Callable[[], str]
) -> str:
    """``render()``'s HTML, kept in this process's memory under ``key()`` (which must name
    everything it shows and every permission it asks about) with its CSRF tokens masked afresh:
    a per-request part of a page (the overview's insight) that changes less often than it is
    read."""
    if settings.PAGE_CACHE_SECONDS <= 0:
        return render()
    part = repr((key(), code_version()))
    name = f"{KEY_PREFIX}.part:{hashlib.sha256(part.encode()).hexdigest()}"
    return _served(request, name, lambda: (render(), None))[0]


def _served(request: HttpRequest, name: str, make: Callable[[], tuple[str, T]]) -> tuple[str, T]:
    """``make()``'s HTML and what goes with it, kept in this process's memory under ``name``
    (``CACHES["pages"]``), the HTML's CSRF tokens masked afresh for each response."""
    served = caches[SERVED_ALIAS]
    kept = served.get(name)
    if kept is None:
        html, extra = make()
        served.set(name, (_tokenless(html), extra), settings.PAGE_CACHE_SECONDS)
        return html, extra
    html, extra = kept
    return _with_token(html, request), extra


def _tokenless(html: str) -> str:
    return CSRF_FIELD.sub(rf"\g<1>{CSRF_SLOT}\g<2>", html)


def _with_token(html: str, request: HttpRequest) -> str:
    """A kept page's forms with this response's own masking of the user's CSRF secret."""
    return html.replace(CSRF_SLOT, get_token(request))


def _has_messages(request: HttpRequest) -> bool:
    storage = getattr(request, "_messages", None)
    return bool(storage is not None and len(storage))
