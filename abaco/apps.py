from django.apps import AppConfig


class AbacoConfig(AppConfig):
    name = "abaco"
    verbose_name = "Abaco (roles and site)"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate

        from abaco.middleware import session_seen_at_login

        post_migrate.connect(_roles_resync, sender=self)
        user_logged_in.connect(session_seen_at_login, dispatch_uid="session_seen_at_login")

        from abaco.telemetry import telemetry_configure

        telemetry_configure()


def _roles_resync(sender, apps=None, **kwargs) -> None:
    """Keep the groups exactly as abaco.roles says, also after later apps add permissions.

    ``flush`` sends post_migrate without ``apps``: then the live registry is the state.
    """
    from django.apps import apps as live_apps

    from abaco.roles import roles_sync

    roles_sync(apps or live_apps)
