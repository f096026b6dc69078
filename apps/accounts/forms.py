"""Sign-in forms, for the site's login page and Django's admin, both throttled (apps.accounts.login_throttle)."""
from __future__ import annotations

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from apps.accounts.login_throttle import (
    block_message,
    client_address,
    login_block_seconds,
    login_failure_record,
    login_success_record,
)


class ThrottledLoginMixin:
    """Refuses a sign-in while its username or address is blocked, and counts each wrong password."""

    retry_after_s = 0

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = client_address(self.request) if self.request is not None else ""
        self.retry_after_s = login_block_seconds(username=username, address=address)
        if self.retry_after_s:
            raise ValidationError(block_message(self.retry_after_s), code="throttled")
        try:
            cleaned_data = super().clean()
        except ValidationError as error:
            if getattr(error, "code", None) == "invalid_login":
                login_failure_record(username=username, address=address)
            raise
        if self.get_user() is not None:
            login_success_record(username=username)
        return cleaned_data


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass
