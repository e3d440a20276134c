from django.apps import AppConfig


class AbacoConfig(AppConfig):
    name = "abaco"
    verbose_name = "Abaco (roles and site)"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        post_migrate.connect(_roles_resync, sender=self)


def _roles_resync(sender, apps, **kwargs) -> None:
    """Keep the groups exactly as abaco.roles says, also after later apps add permissions."""
    from abaco.roles import roles_sync

    roles_sync(apps)
