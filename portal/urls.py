from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from plugins_app.metrics import metrics_view
from portal import probes

# The schema and its docs page describe the API and hold no data: public, whatever the setting.
PUBLIC = [AllowAny]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("v1/schema/", SpectacularAPIView.as_view(permission_classes=PUBLIC), name="api-schema"),
    path(
        "v1/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=PUBLIC),
        name="api-docs",
    ),
    path("v1/", include("plugins_app.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("metrics/", metrics_view),
    path("livez", probes.livez, name="livez"),
    path("readyz", probes.readyz, name="readyz"),
]
