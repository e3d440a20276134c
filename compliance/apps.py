from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = "Compliance and audit"

    def ready(self) -> None:
        from auditlog.registry import auditlog
        from django.apps import apps

        from compliance.classification import AUDIT_EXCLUDED_FIELDS, RESTRICTED_FIELDS

        # One place registers every audited model, with its personal data redacted.
        for label in (
            "loans.Customer",
            "loans.Loan",
            "loans.Installment",
            "loans.Transaction",
            "auth.User",
            "auth.Group",
        ):
            auditlog.register(
                apps.get_model(label),
                mask_fields=list(RESTRICTED_FIELDS.get(label, ())),
                exclude_fields=list(AUDIT_EXCLUDED_FIELDS.get(label, ())),
                m2m_fields={"permissions"}
                if label == "auth.Group"
                else {"groups", "user_permissions"}
                if label == "auth.User"
                else None,
            )
