"""Site-wide error pages: JSON under /api/ and /otlp/, HTML elsewhere."""
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string

from apps.core.errors import ErrorCode, ServiceUnavailable, error_body

API_PATH_PREFIXES = ("/api/", "/otlp/")


def _is_api(request) -> bool:
    return request.path.startswith(API_PATH_PREFIXES)


def bad_request(request, exception=None):
    # Django's own rejections (too many query fields, a disallowed host) land here.
    if _is_api(request):
        return JsonResponse(error_body(ErrorCode.BAD_REQUEST, "Malformed request."), status=400)
    return render(request, "400.html", status=400)


def not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body(ErrorCode.NOT_FOUND, "Not found."), status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    if _is_api(request):
        return JsonResponse(error_body(ErrorCode.SERVER_ERROR, "Internal server error."), status=500)
    return render(request, "500.html", status=500)


def service_unavailable(request, error: ServiceUnavailable):
    """503 with the error's Retry-After: its JSON body under the API prefixes, a plain page elsewhere."""
    if _is_api(request):
        response = JsonResponse(error.as_body(), status=error.status_code)
    else:
        # Rendered without the request: its context processors could reach for the database.
        response = HttpResponse(render_to_string("503.html"), status=error.status_code)
    for header, value in error.headers.items():
        response[header] = value
    return response
