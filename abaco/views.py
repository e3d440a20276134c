from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static

from abaco.health import healthz


def home(request: HttpRequest) -> HttpResponse:
    """Send each role where it works; ``?page=health`` is App Service's health probe."""
    if request.GET.get("page") == "health":
        return healthz(request)
    return _home_for_user(request)


@login_required
def _home_for_user(request: HttpRequest) -> HttpResponse:
    user = request.user
    if user.is_staff and not user.is_superuser:
        return redirect("admin:index")  # uploaders and stewards work there (and read dashboards)
    if user.has_perm("kpis.view_dashboard"):
        return redirect("kpis:overview")
    if user.has_perm("compliance.view_audit"):
        return redirect("compliance:audit")
    if user.is_staff:
        return redirect("admin:index")
    raise PermissionDenied("Your account has no role yet: ask an administrator for one.")


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico on every page that names no icon (the admin's): the site's."""
    return redirect(static("favicon.svg"), permanent=True)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """400 in the site's layout, saying what was wrong (our BadRequest messages are written for
    the user; other refusals, such as Django's suspicious-operation ones, stay generic)."""
    reason = str(exception) if type(exception) is BadRequest else ""
    return render(request, "400.html", {"reason": reason}, status=400)
