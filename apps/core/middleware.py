"""Request guards and response headers that apply to every URL."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponseBadRequest, JsonResponse
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware

from apps.core.errors import ErrorCode, error_body
from apps.core.outages import database_unavailable_error
from apps.core.views import service_unavailable


class RejectNulCharactersMiddleware:
    """Answer 400 to a path or query string that carries a NUL character.

    No identifier TokenSite stores can contain one (ingestion rejects them), and Postgres refuses
    NUL in a text parameter, so a lookup such as `/api/v1/sessions/%00/metadata` would otherwise
    end as a database error. Checking once here covers every view, present and future.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or _query_has_nul(request):
            message = "The URL must not contain NUL (%00) characters."
            if request.path.startswith("/api/"):
                return JsonResponse(error_body(ErrorCode.MALFORMED_URL, message), status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


def _query_has_nul(request) -> bool:
    # The raw query string can hide NUL as %00 or in a key; the parsed QueryDict shows both.
    if not request.META.get("QUERY_STRING"):
        return False
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists())


class CommonMiddleware(DjangoCommonMiddleware):
    """Django's CommonMiddleware, adding the trailing slash only to GET and HEAD requests.

    A redirect cannot carry a request body: for a POST to an unknown URL without the slash, Django
    raises under DEBUG (a 500 in `make run`) and answers 301 otherwise, which a client follows
    with a GET. An exporter or a script posting to a wrong URL gets a 404 instead.
    """

    def should_redirect_with_slash(self, request) -> bool:
        return request.method in ("GET", "HEAD") and super().should_redirect_with_slash(request)


class DatabaseUnavailableMiddleware:
    """Answer 503 with Retry-After, not 500, when a view fails because the database is away.

    DRF views already answer so through the API exception handler; this covers every other
    view, and anything under /api/ or /otlp/ that fails outside DRF's handling, so clients
    back off and resend instead of treating the request as broken.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        error = database_unavailable_error(exception)
        return None if error is None else service_unavailable(request, error)


class PermissionsPolicyMiddleware:
    """Send `Permissions-Policy` denying every browser feature in settings.PERMISSIONS_POLICY_DENIED.

    Django has no setting for this header; one line per reply keeps a compromised or framed page
    from asking for the camera, the location or a payment.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.header = ", ".join(f"{feature}=()" for feature in settings.PERMISSIONS_POLICY_DENIED)

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", self.header)
        return response
