"""SQL functions the tape import uses to parse text columns in bulk.

They return NULL instead of raising on bad input, so one set-based query finds every bad value
of a million-row file and a bad value never aborts a load midway. Each is a single expression
so PostgreSQL inlines it into the calling query (a function call per value would cost ~15 µs).
"""

from django.db import migrations

PARSE_NUMERIC = r"""
CREATE OR REPLACE FUNCTION abaco_parse_numeric(value text, decimal_comma boolean DEFAULT false)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN NOT decimal_comma THEN
      CASE WHEN btrim(value) ~ '^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]{1,3})?$' THEN btrim(value)::numeric END
    ELSE
      CASE WHEN replace(replace(replace(btrim(value), ' ', ''), '.', ''), ',', '.') ~ '^[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]{1,3})?$'
           THEN replace(replace(replace(btrim(value), ' ', ''), '.', ''), ',', '.')::numeric END
  END
$$;
"""

# A date is valid when day 1 of its month plus (day - 1) days is still in that month.
PARSE_DATE = r"""
CREATE OR REPLACE FUNCTION abaco_parse_date(value text, day_first boolean DEFAULT false)
RETURNS date LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN NOT day_first THEN
      CASE WHEN btrim(value) ~ '^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([ T][0-9:.]+)?$' THEN
        CASE WHEN split_part(btrim(value), '-', 1)::int >= 1
              AND split_part(btrim(value), '-', 2)::int BETWEEN 1 AND 12
              AND left(split_part(btrim(value), '-', 3), 2)::int BETWEEN 1 AND 31 THEN
          CASE WHEN extract(month FROM make_date(split_part(btrim(value), '-', 1)::int, split_part(btrim(value), '-', 2)::int, 1)
                                        + (rtrim(left(split_part(btrim(value), '-', 3), 2), ' T')::int - 1))
                    = split_part(btrim(value), '-', 2)::int
               THEN make_date(split_part(btrim(value), '-', 1)::int, split_part(btrim(value), '-', 2)::int, 1)
                    + (rtrim(left(split_part(btrim(value), '-', 3), 2), ' T')::int - 1) END
        END
      END
    ELSE
      CASE WHEN btrim(value) ~ '^[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}$' THEN
        CASE WHEN split_part(btrim(value), '/', 3)::int >= 1
              AND split_part(btrim(value), '/', 2)::int BETWEEN 1 AND 12
              AND split_part(btrim(value), '/', 1)::int BETWEEN 1 AND 31 THEN
          CASE WHEN extract(month FROM make_date(split_part(btrim(value), '/', 3)::int, split_part(btrim(value), '/', 2)::int, 1)
                                        + (split_part(btrim(value), '/', 1)::int - 1))
                    = split_part(btrim(value), '/', 2)::int
               THEN make_date(split_part(btrim(value), '/', 3)::int, split_part(btrim(value), '/', 2)::int, 1)
                    + (split_part(btrim(value), '/', 1)::int - 1) END
        END
      END
  END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("loans", "0001_initial")]

    operations = [
        migrations.RunSQL(PARSE_NUMERIC, "DROP FUNCTION IF EXISTS abaco_parse_numeric(text, boolean)"),
        migrations.RunSQL(PARSE_DATE, "DROP FUNCTION IF EXISTS abaco_parse_date(text, boolean)"),
    ]
