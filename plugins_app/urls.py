from django.conf import settings
from django.urls import path

from plugins_app.api import fleet_views, run_views, views

app_name = "plugins_api"


def route(pattern: str, view, name: str) -> list:
    """One shape: the same answer with or without a trailing slash (no redirect)."""
    return [path(pattern, view, name=name), path(f"{pattern}/", view)]


urlpatterns = [
    *route("plugins", views.PluginListApi.as_view(), "plugin-list"),
    *route("plugins/<str:name>/health", views.PluginHealthApi.as_view(), "plugin-health"),
    *route("plugins/<str:name>/runs", views.PluginRunsApi.as_view(), "plugin-runs"),
    *route("plugins/<str:name>/reload", views.PluginReloadApi.as_view(), "plugin-reload"),
    *route("runs/<int:run_id>", views.RunDetailApi.as_view(), "run-detail"),
    *route("runs/<int:run_id>/cancel", run_views.RunCancelApi.as_view(), "run-cancel"),
    *route("workers", fleet_views.WorkersApi.as_view(), "worker-list"),
]

if settings.PORTAL_BENCHMARK_VIEWS:
    urlpatterns += route("_benchmark/constant", views.BenchmarkConstantApi.as_view(), "bench")
