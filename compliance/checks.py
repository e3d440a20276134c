"""System check: every field of our models is classified (``compliance.fields.DEFAULTS``)."""

from __future__ import annotations

from typing import Any

from django.core import checks


@checks.register(checks.Tags.models)
def fields_classified(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from compliance.classification import unclassified_fields

    return [
        checks.Error(
            f"{name} has no data classification",
            hint="Add it to compliance/fields.py DEFAULTS with its level, personal-data flag and "
            "masking; stewards can refine it later in the admin (Field classifications).",
            obj=name,
            id="compliance.E001",
        )
        for name in unclassified_fields()
    ]
