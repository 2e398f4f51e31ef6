"""Health API (`/v1/...`): thin views over the selectors."""

from __future__ import annotations

from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from plugins_app import selectors
from plugins_app.errors import PluginNotFound
from plugins_app.models import PluginState


class PluginListFilterSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=PluginState.choices, required=False)
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)


class PluginListApi(APIView):
    """Every plugin's health record, FAILED and UNAVAILABLE ones included."""

    def get(self, request: Request) -> Response:
        filters = PluginListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return Response(selectors.health_records(**filters.validated_data))


class PluginHealthApi(APIView):
    """One plugin's health record, or 404."""

    def get(self, request: Request, name: str) -> Response:
        try:
            plugin = selectors.plugin_get(name=name)
        except PluginNotFound as error:
            return Response({"detail": str(error)}, status=404)
        return Response(selectors.health_record(plugin))
