"""GET /v1/workers: the worker nodes of the celery executor and the queues they serve.

A public read like the health reads (PORTAL_API_READS_REQUIRE_AUTH closes it), since load
balancers and dashboards watch it the same way; it shows host names and pids, no secret.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from plugins_app.api.policy import PublicRead
from plugins_app.api.views import ApiView, errors
from plugins_app.fleet.queues import queue_overview
from plugins_app.models import Worker


class WorkerSerializer(serializers.ModelSerializer):
    status = serializers.CharField(help_text="alive, lost (stopped heartbeating) or stopped.")

    class Meta:
        model = Worker
        fields = [
            "name",
            "status",
            "host",
            "pid",
            "queues",
            "concurrency",
            "runs_in_flight",
            "started_at",
            "heartbeat_at",
            "stopped_at",
            "python_version",
            "platform",
            "gpu",
        ]


class QueueSerializer(serializers.Serializer):
    queue = serializers.CharField()
    live_workers = serializers.IntegerField(min_value=0)
    plugins = serializers.ListField(child=serializers.CharField())
    reason = serializers.CharField(
        allow_blank=True, help_text="Empty, or why its plugins' runs wait and what to start."
    )


class FleetSerializer(serializers.Serializer):
    workers = WorkerSerializer(many=True)
    queues = QueueSerializer(many=True)


class WorkersApi(ApiView):
    permission_classes = [PublicRead]

    @extend_schema(
        operation_id="workers_list",
        summary="Worker nodes and queues",
        description="Every worker node that registered (alive, lost or stopped) and, per "
        "queue, its live workers and the plugins routed to it.",
        responses={200: FleetSerializer, **errors(401, 403, 503)},
    )
    def get(self, request: Request) -> Response:
        workers = WorkerSerializer(Worker.objects.all(), many=True).data
        return Response({"workers": workers, "queues": queue_overview()})
