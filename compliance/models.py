from django.db import models


class AuditTrail(models.Model):
    """Holds the auditors' permissions; the history itself is django-auditlog's LogEntry."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_audit", "Can read audit history"),
            ("export_audit", "Can export audit history"),
        ]

    def __str__(self) -> str:
        return "audit trail"
