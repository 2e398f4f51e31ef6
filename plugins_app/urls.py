from django.urls import path, re_path

from plugins_app.api import views

app_name = "plugins_api"

urlpatterns = [
    # One shape, with or without the trailing slash.
    re_path(r"^plugins/?$", views.PluginListApi.as_view(), name="plugin-list"),
    path("plugins/<str:name>/health", views.PluginHealthApi.as_view(), name="plugin-health"),
]
