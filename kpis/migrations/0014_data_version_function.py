"""The page cache's data version as one SQL function (kpis/pagecache.py says what it reads):
PL/pgSQL keeps the query's plan for the connection's life, so the read every cached page makes
is not planned again each time (it was planned for longer than it ran)."""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION kpis_data_version() RETURNS text LANGUAGE plpgsql STABLE AS $$
BEGIN
    -- Each part spelled out (never NULL), so no two states read the same.
    RETURN concat_ws('|',
        coalesce(pg_sequence_last_value(
            pg_get_serial_sequence('kpis_snapshotrun', 'id')::regclass), 0),
        (SELECT concat_ws(':', count(*), coalesce(max(id)::text, '-'),
                          coalesce(max(computed_at)::text, '-'))
         FROM kpis_snapshotrun),
        (SELECT concat_ws(':', count(*), coalesce(max(id)::text, '-'),
                          coalesce(max(greatest(created_at, started_at, finished_at))::text, '-'),
                          coalesce(sum(rows_read)::text, '-'))
         FROM loans_batch),
        coalesce((SELECT max(id) FROM auditlog_logentry
                  WHERE content_type_id IN (
                      SELECT id FROM django_content_type
                      WHERE app_label = 'loans'
                      AND model IN ('loan', 'customer', 'installment', 'transaction')))::text,
                 '-'),
        (SELECT concat_ws(':', count(*), coalesce(max(at)::text, '-'))
         FROM compliance_journalentry WHERE kind = 'review'));
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("kpis", "0013_month_opening"),
        ("loans", "0018_upload_checked_in_the_cluster"),
        ("compliance", "0005_journal_insight_kind"),
        ("auditlog", "__latest__"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunSQL(CREATE, "DROP FUNCTION IF EXISTS kpis_data_version();")]
