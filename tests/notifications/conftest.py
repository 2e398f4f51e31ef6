"""Fixtures of the webhook tests: a real receiver and a webhook pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from plugins_app.notifications.deliverer import deliverer_loop
from plugins_app.notifications.models import Webhook
from tests.notifications.receiver import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP receiver on 127.0.0.1 answering 204; stopped after the test."""
    server = Receiver().start()
    yield server
    deliverer_loop.stop()
    server.stop()


@pytest.fixture
def webhook(receiver: Receiver) -> Webhook:
    """A webhook for every plugin and every event kind, posting to the receiver."""
    return Webhook.objects.create(name="ops", url=receiver.url)
