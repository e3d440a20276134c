from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance and audit"

    def ready(self) -> None:
        from auditlog.models import LogEntry
        from auditlog.registry import auditlog
        from django.apps import apps
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_migrate, post_save, pre_delete

        from compliance import access, checks, signals  # noqa: F401 (receivers and checks)
        from compliance.classification import seed_excluded, seed_restricted

        # One place registers every audited model, with its personal data redacted. Masked fields
        # start from the seed and follow the registry (compliance.classification) once it is read.
        for label in (
            "loans.Customer",
            "loans.Loan",
            "loans.Installment",
            "loans.Transaction",
            "loans.ColumnMap",
            "auth.User",
            "auth.Group",
            "django_q.Schedule",
            "compliance.FieldClassification",
            "compliance.LegalHold",
        ):
            auditlog.register(
                apps.get_model(label),
                mask_fields=seed_restricted(label),
                exclude_fields=seed_excluded(label),
                m2m_fields={"permissions"}
                if label == "auth.Group"
                else {"groups", "user_permissions"}
                if label == "auth.User"
                else None,
            )
        FieldClassification = self.get_model("FieldClassification")
        post_save.connect(signals.journal_log_entry, sender=LogEntry, dispatch_uid="journal.log")
        post_save.connect(signals.registry_changed, sender=FieldClassification)
        post_delete.connect(signals.registry_changed, sender=FieldClassification)
        pre_delete.connect(
            signals.user_delete_refuse, sender=get_user_model(), dispatch_uid="journal.user"
        )
        post_migrate.connect(signals.classification_seed, sender=self)
