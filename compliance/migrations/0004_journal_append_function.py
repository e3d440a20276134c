"""The journal's writer as one SQL function: read the actor's roles, lock the chain's tail, read the
last hash, insert the row with its SHA-256, in one round trip (compliance/journal.py says why)."""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION compliance_journal_append(
    p_at timestamptz, p_kind text, p_action text, p_actor_id integer, p_actor text,
    p_object text, p_path text, p_rows bigint, p_body text, p_durable boolean
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    prev text;
    new_id bigint;
    body text;
BEGIN
    -- The body is stored in PostgreSQL's one spelling of a JSON value (jsonb's text form), with
    -- the actor's roles read here: the same round trip, the roles as they are at this moment.
    IF p_actor_id IS NOT NULL THEN
        body := (p_body::jsonb || jsonb_build_object('roles', (
            SELECT coalesce(jsonb_agg(g.name ORDER BY g.name), '[]'::jsonb)
            FROM auth_user_groups ug JOIN auth_group g ON g.id = ug.group_id
            WHERE ug.user_id = p_actor_id)))::text;
    ELSE
        body := p_body::jsonb::text;
    END IF;
    IF NOT p_durable THEN
        -- Reads and sign-ins: the commit does not wait for the WAL flush (see journal.py).
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    PERFORM pg_advisory_xact_lock(29958897753022828);  -- compliance.journal.CHAIN_LOCK
    SELECT hash INTO prev FROM compliance_journalentry ORDER BY id DESC LIMIT 1;
    prev := coalesce(prev, '');
    INSERT INTO compliance_journalentry
        (at, kind, action, actor_id, actor, object, path, rows, body, prev_hash, hash)
    VALUES (p_at, p_kind, p_action, p_actor_id, p_actor, p_object, p_path, p_rows, body, prev,
            encode(sha256(convert_to(prev || E'\n' || body, 'UTF8')), 'hex'))
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
"""

DROP = "DROP FUNCTION IF EXISTS compliance_journal_append(timestamptz, text, text, integer, text, text, text, bigint, text, boolean);"


class Migration(migrations.Migration):

    dependencies = [
        ("compliance", "0003_seed_classification"),
    ]

    operations = [migrations.RunSQL(CREATE, DROP)]
