"""The fixed cast every test can use: one user per role of docs/design.md, plus an outsider."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.http import HttpResponse
from django.test import TestCase

from abaco.roles import STAFF_ROLES, Role

PASSWORD = "correct-horse-battery-staple"


def user_create(*, username: str, role: Role | None) -> User:
    """A user in the role's group, staff when the role works in the admin."""
    user = User.objects.create_user(
        username=username,
        email=f"{username}@abaco.example",
        password=PASSWORD,
        is_staff=role in STAFF_ROLES,
        is_superuser=role is Role.ADMIN,
    )
    if role is not None:
        user.groups.add(Group.objects.get(name=role.value))
    return user


class CastTestCase(TestCase):
    """Builds the cast once per class; each test runs in its own rolled-back transaction."""

    password = PASSWORD

    @classmethod
    def setUpTestData(cls) -> None:
        super().setUpTestData()
        cls.uploader = user_create(username="uma.uploader", role=Role.UPLOADER)
        cls.steward = user_create(username="sam.steward", role=Role.STEWARD)
        cls.manager = user_create(username="mia.manager", role=Role.MANAGER)
        cls.auditor = user_create(username="aldo.auditor", role=Role.AUDITOR)
        cls.admin = user_create(username="ada.admin", role=Role.ADMIN)
        cls.outsider = user_create(username="otto.outsider", role=None)


def admin_form_data(response: HttpResponse) -> dict[str, object]:
    """What the browser would post back from an admin change page, untouched."""
    data: dict[str, object] = {}

    def take(form) -> None:
        for name in form.fields:
            value = form[name].value()
            data[form.add_prefix(name)] = "" if value is None else value

    take(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        take(formset.management_form)
        for form in formset.forms:
            take(form)
    return data
