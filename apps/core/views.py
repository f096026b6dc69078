"""Site-wide error pages: JSON under /api/, HTML elsewhere."""
from django.http import JsonResponse
from django.shortcuts import render


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def bad_request(request, exception=None):
    # Django's own rejections (too many query fields, a disallowed host) land here.
    if _is_api(request):
        return JsonResponse({"error": {"code": "bad_request", "message": "Malformed request."}}, status=400)
    return render(request, "400.html", status=400)


def not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found."}}, status=404)
    return render(request, "404.html", status=404)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"error": {"code": "server_error", "message": "Internal server error."}}, status=500)
    return render(request, "500.html", status=500)
