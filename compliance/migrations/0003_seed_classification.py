"""Seed the classification registry from compliance/fields.py (today's masking rules).

Fields of models migrated later are added by the post_migrate re-sync (compliance.signals).
"""

from django.db import migrations


def seed(apps, schema_editor):
    from compliance.classification import classification_sync

    classification_sync(apps)


class Migration(migrations.Migration):

    dependencies = [
        ("compliance", "0002_journal_classification_holds"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
