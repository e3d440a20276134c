from django.db import models


class Dashboard(models.Model):
    """Holds the dashboard permissions; KPI snapshots arrive with the KPI engine."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_dashboard", "Can read dashboards and drill down to loans"),
            ("export_data", "Can export tables and reports"),
        ]

    def __str__(self) -> str:
        return "dashboards"
