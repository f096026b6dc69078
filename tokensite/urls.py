from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.core.apis import HealthApi
from apps.otlp.apis import otlp_endpoint_misplaced

urlpatterns = [
    path("healthz", HealthApi.as_view(), name="healthz"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI from drf-spectacular-sidecar's static files; the split view serves its start-up script
    # as a file (`/api/docs/?script`), so the page runs under the CSP with no inline script.
    path(
        "api/docs/",
        # No OPTIONS metadata: its reply would be rendered by the page's template renderer, which
        # has no template for it (a 500); OPTIONS gets a 405 like any other method but GET.
        SpectacularSwaggerSplitView.as_view(
            url_name="api-schema", template_name="api_docs/swagger_ui.html", metadata_class=None
        ),
        name="api-docs",
    ),
    path("api/v1/", include("tokensite.api_urls")),
    path("otlp/v1/", include("apps.otlp.urls")),
    re_path(r"^v1/(?P<signal>logs|traces|metrics)/?$", otlp_endpoint_misplaced),
    path("", include("apps.dashboards.urls")),
]

# Off unless ADMIN_ENABLED: staff credentials are the most valuable ones to guess, so the page
# that takes them only exists where an operator asked for it.
if settings.ADMIN_ENABLED:
    urlpatterns.insert(0, path("admin/", admin.site.urls))

handler400 = "apps.core.views.bad_request"
handler404 = "apps.core.views.not_found"
handler500 = "apps.core.views.server_error"
