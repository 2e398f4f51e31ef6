"""The fleet in the admin: worker nodes read-only, a plugin's queue set through the service."""

from __future__ import annotations

import pytest
from django.urls import reverse

from plugins_app import services
from plugins_app.fleet.node import node_environment
from plugins_app.models import EventKind, Plugin, PluginEvent, Worker

pytestmark = pytest.mark.django_db


def logged_in(client, user):
    client.force_login(user)
    return client


def test_workers_are_listed_and_never_edited(client, make_operator):
    """An operator sees each node with its queues and status; no add, change or delete."""
    services.worker_register(
        name="gpu-1", queues=["gpu"], concurrency=2, environment=node_environment()
    )
    client = logged_in(client, make_operator())
    listing = client.get(reverse("admin:plugins_app_worker_changelist"))
    assert listing.status_code == 200
    assert b"gpu-1" in listing.content and b"alive" in listing.content
    worker = Worker.objects.get()
    page = client.get(reverse("admin:plugins_app_worker_change", args=[worker.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert client.get(reverse("admin:plugins_app_worker_add")).status_code == 403


def test_an_operator_routes_a_plugin_to_a_queue(client, make_operator, make_plugin, settings):
    """The queue page sets the override through the service: one event, who did it, and a
    warning that no worker serves the new queue."""
    settings.PORTAL_RUN_EXECUTOR = "celery"
    plugin = make_plugin("reader")
    client = logged_in(client, make_operator("ann"))
    url = reverse("admin:plugins_app_plugin_queue", args=[plugin.pk])
    assert client.get(url).status_code == 200

    response = client.post(url, {"queue": "ocr"}, follow=True)

    assert Plugin.objects.get(name="reader").queue == "ocr"
    event = PluginEvent.objects.get(kind=EventKind.QUEUE_CHANGED)
    assert event.actor == "user:ann"
    shown = [str(message) for message in response.context["messages"]]
    assert any("No worker is serving queue 'ocr'" in message for message in shown)


def test_a_queue_that_is_no_name_is_refused(client, make_operator, make_plugin):
    """A bad queue name is a form error naming the rule; nothing changes."""
    plugin = make_plugin("reader")
    client = logged_in(client, make_operator())
    url = reverse("admin:plugins_app_plugin_queue", args=[plugin.pk])

    response = client.post(url, {"queue": "GPU nodes"})

    assert response.status_code == 200
    assert b"is not a queue name" in response.content
    assert Plugin.objects.get(name="reader").queue == ""


def test_only_operators_set_queues(client, make_operator, make_plugin):
    """A runner (no operate permission) is refused the queue page."""
    plugin = make_plugin("reader")
    client = logged_in(client, make_operator(role="runner"))
    url = reverse("admin:plugins_app_plugin_queue", args=[plugin.pk])
    assert client.post(url, {"queue": "ocr"}).status_code == 403
    assert Plugin.objects.get(name="reader").queue == ""


def test_without_worker_nodes__the_queue_is_named_without_a_warning(
    client, make_operator, make_plugin
):
    """On the embedded default (thread executor) no worker serves a queue and none is needed:
    the page names the queue, and says no worker is missing."""
    plugin = make_plugin("vision", requirements={"gpu": True})
    client = logged_in(client, make_operator())
    page = client.get(reverse("admin:plugins_app_plugin_change", args=[plugin.pk]))
    assert b"gpu (<a" in page.content
    assert b"No worker is serving" not in page.content


def test_the_plugin_page_shows_the_queue_and_who_serves_it(
    client, make_operator, make_plugin, settings
):
    """The plugin's page names its queue and, with no live worker there, what to start."""
    settings.PORTAL_RUN_EXECUTOR = "celery"
    plugin = make_plugin("vision", requirements={"gpu": True})
    client = logged_in(client, make_operator())
    page = client.get(reverse("admin:plugins_app_plugin_change", args=[plugin.pk]))
    assert b"manage.py runworker --queues gpu" in page.content
