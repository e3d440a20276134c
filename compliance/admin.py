"""Admin: the classification registry (stewards and admins edit it; django-auditlog records each
change into the journal), legal holds, the journal read-only, and users deactivated, not deleted."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from compliance.models import FieldClassification, JournalEntry, LegalHold


@admin.register(FieldClassification)
class FieldClassificationAdmin(admin.ModelAdmin):
    list_display = ["model", "field", "level", "personal", "masking", "retention_days"]
    list_filter = ["level", "personal", "masking", "model"]
    list_editable = ["level", "personal", "masking", "retention_days"]
    search_fields = ["model", "field"]
    readonly_fields = ["model", "field", "updated_at"]
    list_per_page = 100

    def has_add_permission(self, request) -> bool:
        return False  # one row per model field, added from compliance/fields.py by migrate

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    list_display = ["object", "reason", "created_by", "created_at", "released_at"]
    list_filter = [("released_at", admin.EmptyFieldListFilter)]
    search_fields = ["=object"]
    readonly_fields = ["created_by", "created_at", "released_by"]
    actions = ["release"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        if obj.released_at and not obj.released_by_id:
            obj.released_by = request.user
        super().save_model(request, obj, form, change)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a hold is released (and stays on record), never deleted

    @admin.action(description="Release the selected holds", permissions=["change"])
    def release(self, request, queryset):
        from compliance.retention import legal_hold_release

        for hold in queryset.filter(released_at__isnull=True):
            legal_hold_release(hold=hold, by=request.user)
        messages.success(request, "Released.")


@admin.register(JournalEntry)
class JournalEntryAdmin(admin.ModelAdmin):
    list_display = ["id", "at", "kind", "action", "actor", "object", "rows"]
    list_filter = ["kind"]
    search_fields = ["=actor", "=object"]
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class AttributedUserAdmin(UserAdmin):
    """Users are deactivated, never deleted: their audit entries must keep naming them."""

    actions = ["deactivate"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Deactivate the selected users", permissions=["change"])
    def deactivate(self, request, queryset):
        count = 0
        for user in queryset.filter(is_active=True):
            user.is_active = False
            user.save(update_fields=["is_active"])  # through save: the audit history records it
            count += 1
        messages.success(request, f"{count} user(s) deactivated; their history keeps their name.")
