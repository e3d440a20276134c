"""django-q2's admin, read-only for everyone: a schedule or task is code the cluster will run, so
no page may create, edit, resubmit or delete one. Jobs are declared in ``integrations.schedules``
(synced by ``setup_schedules``) and run from the pipelines page."""

from __future__ import annotations

from django.contrib import admin
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success


class ReadOnlyTaskAdmin:
    actions = None  # "Resubmit selected tasks" would run any stored function again

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ScheduleAdmin(ReadOnlyTaskAdmin, q_admin.ScheduleAdmin):
    pass


class SuccessAdmin(ReadOnlyTaskAdmin, q_admin.TaskAdmin):
    pass


class FailureAdmin(ReadOnlyTaskAdmin, q_admin.FailAdmin):
    pass


class QueueAdmin(ReadOnlyTaskAdmin, q_admin.QueueAdmin):
    pass


for _model, _admin in (
    (Schedule, ScheduleAdmin),
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueueAdmin),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _admin)
