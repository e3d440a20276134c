"""API tokens in the admin: create one for a user with scopes and an expiry (the token is shown
once, in the confirmation message), list them, revoke and rotate them."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from api.models import ApiToken, Scope
from api.tokens import api_token_create, api_token_revoke, api_token_rotate


class ApiTokenForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    expires_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, initial=90, help_text="Empty: never expires."
    )

    class Meta:
        model = ApiToken
        fields = ["user", "name", "scopes"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    form = ApiTokenForm
    list_display = [
        "prefix",
        "user",
        "name",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at"]
    search_fields = ["user__username", "name", "prefix"]
    readonly_fields = [
        "prefix",
        "created_at",
        "created_by",
        "expires_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke", "rotate"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a token is revoked or rotated, never edited

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "name", "scopes", "expires_days"]
        return ["user", "name", "scopes", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        row, token = api_token_create(
            user=form.cleaned_data["user"],
            scopes=form.cleaned_data["scopes"],
            expires_days=form.cleaned_data.get("expires_days"),
            name=form.cleaned_data.get("name", ""),
            by=request.user,
        )
        obj.pk = row.pk
        messages.warning(request, f"The token, shown this once: {token}")

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at__isnull=True):
            api_token_revoke(token=token)
        messages.success(request, f"Revoked at {timezone.now():%Y-%m-%d %H:%M}.")

    @admin.action(description="Rotate the selected tokens (revoke, issue a successor)")
    def rotate(self, request, queryset):
        for old in queryset.filter(revoked_at__isnull=True):
            new, token = api_token_rotate(token=old, by=request.user)
            messages.warning(request, f"{old.prefix}… → {new.prefix}…, shown this once: {token}")
