from django.db import migrations


def create_roles(apps, schema_editor):
    from abaco.roles import roles_sync

    roles_sync(apps, strict=False)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auditlog", "__latest__"),
        ("loans", "0001_initial"),
        ("kpis", "0001_initial"),
        ("compliance", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
