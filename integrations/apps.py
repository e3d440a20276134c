from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "Integrations"

    def ready(self) -> None:
        from django.db.models.signals import pre_save
        from django_q.models import Schedule
        from django_q.signals import post_spawn

        from integrations import schedules

        pre_save.connect(schedules.schedule_save_refuse, sender=Schedule, dispatch_uid="schedule")
        post_spawn.connect(cluster_started, dispatch_uid="cluster_started")


def cluster_started(sender, proc_name: str, **kwargs) -> None:
    """A cluster worker came up: switch off undeclared schedules, clean up after dead imports."""
    from integrations.schedules import schedules_flag
    from loans.services import imports_recover

    schedules_flag()
    imports_recover()
