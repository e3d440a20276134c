from django.apps import AppConfig


class KpisConfig(AppConfig):
    name = "kpis"
    verbose_name = "KPIs"

    def ready(self) -> None:
        from kpis.services import snapshots_restate_queue
        from loans.signals import book_changed

        # A load that changed the past queues the recomputation of the snapshots it touched.
        book_changed.connect(snapshots_restate_queue, dispatch_uid="kpis.restate")
