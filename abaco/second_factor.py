"""Signing in: lockout after repeated failures (django-axes), a TOTP second factor with recovery
codes for every staff and admin account (django-otp), and the password rules Django lacks.

The flow: user name and password (``login``); a staff account then proves a code from its
authenticator app or a recovery code (``second_factor``), or, the first time, enrols the app and
receives its recovery codes (``second_factor_enrol``). Until then ``SecondFactorMiddleware`` lets
the session reach nothing but these pages; the admin's own login page leads here.
"""

from __future__ import annotations

import base64
import itertools

from axes.backends import AxesStandaloneBackend
from django import forms
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.dispatch import Signal
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_otp import login as otp_login
from django_otp import match_token
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from abaco.roles import Role

RECOVERY_CODES = 10
# What an unverified staff session may open: the sign-in steps themselves and static files.
OPEN_PATHS = ("login", "logout", "second_factor", "second_factor_enrol")


# Sent after every second-factor attempt (args: request, user, ok, how = "totp", "recovery code"
# or "enrolment"): the access log records it (compliance listens; abaco imports nothing above it).
second_factor_checked = Signal()


def needs_second_factor(user) -> bool:
    return user.is_authenticated and (user.is_staff or user.is_superuser)


def token_only(user) -> bool:
    """An account whose only role is API client: it reads the REST API with a token, scoped and
    expiring (docs/api.md), and never signs in to the web pages with a password, which is
    neither (docs/design.md, roles)."""
    roles = {group.name for group in user.groups.all()}
    return roles == {Role.API_CLIENT.value} and not (user.is_staff or user.is_superuser)


class SignInForm(AuthenticationForm):
    """Django's sign-in form, refusing an API client's account once its password is checked."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Your user name and password did not match. Please try again.",
        "token_only": (
            "This is an API client account: it reads the REST API with a token (see the API "
            "docs), and does not sign in to the web pages."
        ),
    }

    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)
        if token_only(user):
            raise ValidationError(self.error_messages["token_only"], code="token_only")


class LockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check before the password backend. Every login path of ours (the
    sign-in page, the admin through it, DRF) passes the request; a caller without one (the test
    client's ``login``) is not a web sign-in and is let through to the password check."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class RepeatedCharacterValidator:
    """Refuses passwords made of few distinct characters or long runs of one (``aaaaaaaaaaaa``,
    ``abababababab``): long enough for the length rule, guessed at once."""

    def __init__(self, min_distinct: int = 6, max_run: int = 3):
        self.min_distinct = min_distinct
        self.max_run = max_run

    def validate(self, password: str, user=None) -> None:
        if len(set(password)) < self.min_distinct:
            raise ValidationError(
                f"This password uses fewer than {self.min_distinct} different characters.",
                code="password_too_repetitive",
            )
        run = 1
        for before, char in itertools.pairwise(password):
            run = run + 1 if char == before else 1
            if run > self.max_run:
                raise ValidationError(
                    f"This password repeats a character more than {self.max_run} times in a row.",
                    code="password_too_repetitive",
                )

    def get_help_text(self) -> str:
        return (
            f"Your password must use at least {self.min_distinct} different characters and never "
            f"repeat one more than {self.max_run} times in a row."
        )


def _next_url(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return reverse("home")


def _with_next(name: str, request: HttpRequest) -> str:
    url = reverse(name)
    wanted = _next_url(request)
    return f"{url}?{urlencode({'next': wanted})}" if wanted != reverse("home") else url


class LoginView(auth_views.LoginView):
    """User name and password; a staff account goes on to its second factor."""

    redirect_authenticated_user = True
    form_class = SignInForm

    def form_valid(self, form):
        response = super().form_valid(form)
        if needs_second_factor(form.get_user()):
            return redirect(_with_next("second_factor", self.request))
        return response


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's login page: the same sign-in, second factor included. A signed-in user whose
    role has no admin (a manager or auditor who opened /admin/) is refused here: sent to the
    sign-in page, they would be sent straight back to the admin, and from it here, for ever."""
    if request.user.is_authenticated and not admin.site.has_permission(request):
        raise PermissionDenied("Your role does not use the admin.")
    query = request.GET.urlencode()
    return redirect(f"{reverse('login')}?{query}" if query else reverse("login"))


class TokenForm(forms.Form):
    token = forms.CharField(
        label="Code",
        max_length=16,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True}),
    )


def second_factor(request: HttpRequest) -> HttpResponse:
    """A code from the authenticator app, or one recovery code (each works once)."""
    user = request.user
    if not user.is_authenticated:
        return redirect("login")
    if not needs_second_factor(user) or user.is_verified():  # type: ignore[attr-defined]
        return redirect(_next_url(request))
    if not TOTPDevice.objects.devices_for_user(user, confirmed=True).exists():
        return redirect(_with_next("second_factor_enrol", request))
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        device = match_token(user, form.cleaned_data["token"].strip().replace(" ", ""))
        how = "recovery code" if isinstance(device, StaticDevice) else "totp"
        second_factor_checked.send(
            sender=None, request=request, user=user, ok=device is not None, how=how
        )
        if device is not None:
            otp_login(request, device)
            return redirect(_next_url(request))
        form.add_error("token", "That code is not valid (or was already used). Try the next one.")
    return render(
        request, "registration/second_factor.html", {"form": form, "next": _next_url(request)}
    )


def second_factor_enrol(request: HttpRequest) -> HttpResponse:
    """First sign-in of a staff account: add the authenticator app, confirm one code, receive the
    recovery codes (shown this once)."""
    user = request.user
    if not user.is_authenticated:
        return redirect("login")
    if not needs_second_factor(user):
        return redirect(_next_url(request))
    if TOTPDevice.objects.devices_for_user(user, confirmed=True).exists():
        return redirect(_with_next("second_factor", request))
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    form = TokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        ok = device.verify_token(form.cleaned_data["token"].strip().replace(" ", ""))
        second_factor_checked.send(sender=None, request=request, user=user, ok=ok, how="enrolment")
        if ok:
            codes = second_factor_confirm(device=device)
            otp_login(request, device)
            return render(
                request,
                "registration/recovery_codes.html",
                {"codes": codes, "next": _next_url(request)},
            )
        form.add_error("token", "That code does not match: check the app's clock and try again.")
    context = {
        "form": form,
        "secret": base64.b32encode(device.bin_key).decode(),
        "otpauth": device.config_url,
        "next": _next_url(request),
    }
    return render(request, "registration/second_factor_enrol.html", context)


@transaction.atomic
def second_factor_confirm(*, device: TOTPDevice) -> list[str]:
    """Confirms an authenticator app and issues fresh recovery codes (earlier ones stop working)."""
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    recovery, _ = StaticDevice.objects.get_or_create(
        user=device.user, name="Recovery codes", defaults={"confirmed": True}
    )
    recovery.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=recovery, token=c) for c in codes)
    return codes


class SecondFactorMiddleware:
    """A staff session that has not proved its second factor reaches only the sign-in pages."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        user = request.user
        if not needs_second_factor(user) or user.is_verified():
            return None
        match = request.resolver_match
        if match is not None and not match.namespace and match.url_name in OPEN_PATHS:
            return None
        if match is not None and match.url_name in ("healthz", "readyz", "favicon"):
            return None
        return redirect(
            f"{reverse('second_factor')}?{urlencode({'next': request.get_full_path()})}"
        )
