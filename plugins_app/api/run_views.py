"""POST /v1/runs/{id}/cancel: stop a queued or running run, wherever it runs.

A write like the runs and reloads (token or session with CSRF, the run_plugin permission,
PORTAL_API_WRITE_RATE); the service ends the run CANCELLED at once, and the process running
it kills its call within plugins_app.cancel_watch.CANCEL_POLL_S.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from plugins_app import services
from plugins_app.api import serializers as api
from plugins_app.api.views import ApiView, api_actor, errors, run_data


class RunCancelApi(ApiView):
    @extend_schema(
        operation_id="runs_cancel",
        summary="Cancel a queued or running run",
        description=(
            "Ends the run CANCELLED at once, recording who cancelled it; it is not counted as "
            "a failure of the plugin, nor retried. A queued run never starts; a running run's "
            "processes are killed on whichever node runs it, within about half a second. 409 "
            "with a message when the run already finished, 404 for an unknown run."
        ),
        request=api.EmptyBody,
        responses={
            200: OpenApiResponse(api.RunSerializer, description="The run, now cancelled."),
            **errors(400, 401, 403, 404, 409, 413, 415, 429, 503),
        },
    )
    def post(self, request: Request, run_id: int) -> Response:
        api.validated(api.EmptyBody, self.body(request), where="request body")
        run = services.run_cancel(run_id=run_id, actor=api_actor(request))
        return Response(run_data(request, run))
