"""`?wait=` requests are bounded per server process, in all and per user: over it, a 429."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from plugins_app.api.wait_slots import TooManyWaiting, WaitSlots, wait_slots
from plugins_app.models import PluginRun
from tests.api.test_writes import echo, plugins, post_json  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


class TestWaitSlots:
    def test_per_client__a_second_wait_from_one_client_is_refused(self):
        """One client over its bound is refused; another client still gets a slot."""
        slots = WaitSlots()
        with slots.hold("a", limit=5, per_client=1):
            with (
                pytest.raises(TooManyWaiting, match="1 from you, at most 1"),
                slots.hold("a", limit=5, per_client=1),
            ):
                pass
            with slots.hold("b", limit=5, per_client=1):
                pass

    def test_total__over_the_process_bound_is_refused(self):
        """All slots taken by others: refused, naming the process's bound."""
        slots = WaitSlots()
        with (
            slots.hold("a", limit=2, per_client=1),
            slots.hold("b", limit=2, per_client=1),
            pytest.raises(TooManyWaiting, match="2 on this server process, at most 2"),
            slots.hold("c", limit=2, per_client=1),
        ):
            pass

    def test_release__a_slot_is_free_again_after_the_block(self):
        """A slot is given back when the wait ends, even by an exception."""
        slots = WaitSlots()
        with pytest.raises(RuntimeError), slots.hold("a", limit=1, per_client=1):
            raise RuntimeError("the wait failed")
        with slots.hold("a", limit=1, per_client=1):
            pass


class TestApi:
    def test_wait__over_the_bound_is_429_and_nothing_queued(self, operator_client, echo):  # noqa: F811
        """A user already waiting: a second ?wait= is a 429 with Retry-After; no run queued."""
        user = get_user_model().objects.get(username="operator")
        with wait_slots.hold(f"user:{user.pk}", limit=2, per_client=1):
            response = post_json(operator_client, "/v1/plugins/echo/runs?wait=5", {})
        assert response.status_code == 429
        assert response["Retry-After"] == "2"
        assert "poll the run's Location" in response.json()["detail"]
        assert PluginRun.objects.count() == 0

    def test_no_wait__not_bounded(self, operator_client, echo):  # noqa: F811
        """A submission without ?wait= holds no thread and is queued whatever the waits."""
        user = get_user_model().objects.get(username="operator")
        with wait_slots.hold(f"user:{user.pk}", limit=2, per_client=1):
            response = post_json(operator_client, "/v1/plugins/echo/runs", {})
        assert response.status_code == 202
        assert PluginRun.objects.count() == 1
