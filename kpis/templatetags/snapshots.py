"""The batch page's "Snapshots this batch changed" section (admin/loans/batch/change_form.html):
loans' admin renders it through this tag, so that loans never imports kpis."""

from __future__ import annotations

from django import template

from kpis.selectors.restatement import batch_snapshots

register = template.Library()


@register.inclusion_tag("kpis/_batch_snapshots.html")
def batch_snapshots_section(batch) -> dict:
    affected = batch_snapshots(batch) if batch is not None else []
    return {
        "batch": batch,
        "affected": affected,
        "pending": sum(1 for a in affected if a.status == "pending"),
    }
