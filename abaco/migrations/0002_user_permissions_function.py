"""A user's permissions as one SQL function (abaco/backends.py): PL/pgSQL keeps the query's plan
for the connection's life, so the read every page makes is not planned again each time."""

from django.db import migrations

CREATE = r"""
CREATE OR REPLACE FUNCTION abaco_user_permissions(p_user integer)
RETURNS TABLE (source text, perm text) LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT 'own', ct.app_label || '.' || p.codename
    FROM auth_user_user_permissions x
    JOIN auth_permission p ON p.id = x.permission_id
    JOIN django_content_type ct ON ct.id = p.content_type_id
    WHERE x.user_id = p_user
    UNION ALL
    SELECT 'group', ct.app_label || '.' || p.codename
    FROM auth_user_groups m
    JOIN auth_group_permissions x ON x.group_id = m.group_id
    JOIN auth_permission p ON p.id = x.permission_id
    JOIN django_content_type ct ON ct.id = p.content_type_id
    WHERE m.user_id = p_user;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("abaco", "0001_roles"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.RunSQL(CREATE, "DROP FUNCTION IF EXISTS abaco_user_permissions(integer);")
    ]
