from django.db import migrations


class Migration(migrations.Migration):
    """The schema a tape import stages its files in (``loans.imports.tape.pool.staging``).

    Its tables are UNLOGGED and live only inside an import's transaction, so the schema is empty
    whenever nothing is importing.
    """

    dependencies = [
        ("loans", "0010_customer_segments"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE SCHEMA IF NOT EXISTS import_staging",
            reverse_sql="DROP SCHEMA IF EXISTS import_staging CASCADE",
        ),
    ]
