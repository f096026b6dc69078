"""Webhook targets and bodies: where an alert may be posted, what is posted, and how it is signed.

Bodies are JSON that Slack and Microsoft Teams incoming webhooks accept as they are (both read
`text` and ignore other fields), with the alert's structured fields beside it for other receivers.
Each body is signed: `X-TokenSite-Signature: sha256=<hex>` is HMAC-SHA256 of the raw body under
the budget's webhook secret, and the body's `timestamp` (repeated in `X-TokenSite-Timestamp`) is
covered by it, so a receiver can refuse stale replays.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from apps.core.errors import ApplicationError, ErrorCode

SIGNATURE_HEADER = "X-TokenSite-Signature"
TIMESTAMP_HEADER = "X-TokenSite-Timestamp"
DELIVERY_HEADER = "X-TokenSite-Delivery"  # the same id on every retry: receivers can drop repeats


class WebhookTargetRefused(ApplicationError):
    code = ErrorCode.INVALID_WEBHOOK_URL


class WebhookHostUnresolved(WebhookTargetRefused):
    """The host has no address now: DNS may be away for a while, so this is not final."""


def _address_is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
        or ip.is_unspecified or not ip.is_global
    )  # fmt: skip


def webhook_target_check(url: str) -> str:
    """The URL if alerts may be posted to it, else WebhookTargetRefused.

    It must be http(s) with a host, and every address the host resolves to must be public:
    loopback, private, link-local and other non-global addresses are refused unless
    settings.WEBHOOK_ALLOW_PRIVATE (an alert must not become a way to reach the internal network).
    Checked when a budget is saved and again before each send, since DNS answers change.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookTargetRefused(f"A webhook URL must be http:// or https:// with a host, not {url!r}.")
    if parts.username or parts.password:
        raise WebhookTargetRefused("A webhook URL must not carry credentials; sign with the webhook secret instead.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise WebhookTargetRefused(f"The webhook URL's port is invalid: {url!r}.") from exc
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return url
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookHostUnresolved(f"The webhook host {parts.hostname!r} does not resolve.") from exc
    refused = sorted({info[4][0] for info in infos if not _address_is_public(info[4][0])})
    if refused:
        raise WebhookTargetRefused(
            f"The webhook host {parts.hostname!r} resolves to a loopback, private or link-local address "
            f"({', '.join(refused)}); set WEBHOOK_ALLOW_PRIVATE=true to allow internal receivers."
        )
    return url


def webhook_signature(*, secret: str, body: bytes) -> str:
    """The X-TokenSite-Signature value for a raw body: `sha256=` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
