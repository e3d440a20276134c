"""The roles of docs/design.md ("Who uses it") as Django groups, and the checks views use.

Groups are created by a data migration (``abaco/migrations``) from ``ROLES`` below and re-synced
after every ``migrate`` (``AbacoConfig.ready``), so a change here reaches every deployment.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


class Role(StrEnum):
    UPLOADER = "Uploader"
    STEWARD = "Data steward"
    MANAGER = "Manager"
    AUDITOR = "Auditor"
    ADMIN = "Admin"
    API_CLIENT = "API client"


READ_LOAN_BOOK = [
    "loans.view_customer",
    "loans.view_loan",
    "loans.view_installment",
    "loans.view_transaction",
    "loans.view_batch",
    "loans.view_financialstatementline",
    "loans.view_marketingspend",
]

UPLOAD = ["loans.add_batch", "loans.add_upload", "loans.view_upload", "loans.view_batchchange"]

# Staff who load data read the dashboards and loan pages to check what a load did (no exports),
# and the raw files behind the numbers.
CHECK_LOADS = ["kpis.view_dashboard", "loans.view_raw_file"]

# Staff see the pipelines and re-run them; managers see how fresh their numbers are.
PIPELINES = ["integrations.view_pipelines", "integrations.run_pipelines"]

# role -> permission codenames ("app_label.codename"); "*" means every permission.
ROLES: dict[Role, list[str]] = {
    Role.UPLOADER: [*READ_LOAN_BOOK, *UPLOAD, *PIPELINES, *CHECK_LOADS],
    Role.STEWARD: [
        *READ_LOAN_BOOK,
        *UPLOAD,
        *PIPELINES,
        *CHECK_LOADS,
        "integrations.view_crmrecord",
        "integrations.view_adinsight",
        "loans.add_columnmap",
        "loans.change_columnmap",
        "loans.view_columnmap",
        "loans.change_batchchange",
        "loans.change_customer",
        "loans.change_loan",
        "loans.change_installment",
        "loans.view_pii",
        "kpis.recompute_snapshots",
        # The classification registry (each change journaled) and legal holds.
        "compliance.view_fieldclassification",
        "compliance.change_fieldclassification",
        "compliance.view_legalhold",
        "compliance.add_legalhold",
        "compliance.change_legalhold",
    ],
    Role.MANAGER: [
        *READ_LOAN_BOOK,
        "kpis.view_dashboard",
        "kpis.export_data",
        "kpis.regenerate_insight",
        "integrations.view_pipelines",
    ],
    Role.AUDITOR: [
        *READ_LOAN_BOOK,
        "compliance.view_audit",
        "compliance.export_audit",
        "auditlog.view_logentry",
        "kpis.export_data",
        "loans.view_raw_file",
        "compliance.view_journalentry",
        # Failed sign-ins and lockouts (django-axes' records).
        "axes.view_accessattempt",
        "axes.view_accessfailurelog",
    ],
    Role.ADMIN: ["*"],
    Role.API_CLIENT: [*READ_LOAN_BOOK, "kpis.view_dashboard"],
}

# Roles that work in the Django admin get is_staff when their users are created.
STAFF_ROLES = {Role.UPLOADER, Role.STEWARD, Role.ADMIN}


def roles_sync(apps, *, strict: bool = True) -> None:
    """Create or update the role groups with exactly their permissions (migration-safe).

    In the data migration (``strict=False``) permissions of models created by later migrations
    do not exist yet and are skipped; the post_migrate re-sync adds them. There a permission no
    installed model defines is a typo in ``ROLES`` and raises, and one whose model is not migrated
    yet (``migrate`` of one app on a fresh database) is skipped until the migrate that adds it.
    """
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after migrate; the groups need them now.
    for app_config in apps.get_app_configs():
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = models_module

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role.value)
        if perms == ["*"]:
            group.permissions.set(Permission.objects.all())
            continue
        wanted = []
        for perm in perms:
            app_label, codename = perm.split(".")
            found = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if found is None and strict and codename not in _defined_permissions(app_label):
                raise LookupError(f"role {role.value}: no permission {perm}")
            if found is not None:
                wanted.append(found)
        group.permissions.set(wanted)


def _defined_permissions(app_label: str) -> set[str]:
    """The permission codenames the installed models of ``app_label`` define."""
    from django.apps import apps

    try:
        models = apps.get_app_config(app_label).get_models()
    except LookupError:
        return set()
    codenames: set[str] = set()
    for model in models:
        opts = model._meta
        codenames |= {f"{action}_{opts.model_name}" for action in opts.default_permissions}
        codenames |= {codename for codename, _ in opts.permissions}
    return codenames


def role_required(perm: str) -> Callable:
    """Anonymous users go to login; signed-in users without ``perm`` get 403."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.has_perm(perm):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return login_required(wrapped)

    return decorator
