from django.contrib import admin

from apps.accounts.forms import AdminLoginForm
from apps.accounts.models import ApiKey, Invitation, Membership, Project, Team

# The admin (mounted only with ADMIN_ENABLED) signs in under the same throttling as the site.
admin.site.login_form = AdminLoginForm


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "created_at")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "team", "role")
    list_filter = ("role",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "team")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "project", "scope", "name", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "secret_hash", "last_used_at")


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ("username", "team", "role", "status", "expires_at", "created_by")
    list_filter = ("status", "role")
