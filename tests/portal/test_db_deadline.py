"""The client-side database deadline: the watchdog cuts a socket, deadlines nest and mark cuts."""

from __future__ import annotations

import socket
import time

import pytest
from django.db import OperationalError, connection

from portal.db.deadline import client_deadline, current_deadline, current_deadline_s
from portal.db.watchdog import Watchdog


class TestWatchdog:
    def test_watch__a_blocked_read_fails_once_the_deadline_passes(self):
        """A read on a socket whose peer never answers returns at the deadline, cut."""
        ours, silent_peer = socket.socketpair()
        with ours, silent_peer:
            watchdog = Watchdog()
            started = time.monotonic()
            with watchdog.watch(ours.fileno(), 0.2) as watch:
                assert ours.recv(1) == b""  # shut down: end of stream, not a hang
            assert watch.fired
            assert 0.15 <= time.monotonic() - started < 10

    def test_watch__a_quick_answer_is_not_cut(self):
        """A read answered before the deadline leaves the socket alone."""
        ours, peer = socket.socketpair()
        with ours, peer:
            watchdog = Watchdog()
            peer.sendall(b"x")
            with watchdog.watch(ours.fileno(), 5) as watch:
                assert ours.recv(1) == b"x"
            assert not watch.fired
            peer.sendall(b"y")
            assert ours.recv(1) == b"y"  # still usable


class TestClientDeadline:
    def test_nesting__the_shorter_deadline_wins_and_ends_with_its_block(self):
        """An inner block cannot extend the enclosing deadline; leaving it restores the outer."""
        assert current_deadline_s() is None
        with client_deadline(10):
            with client_deadline(2):
                assert current_deadline_s() == 2
            with client_deadline(30):
                assert current_deadline_s() == 10
            assert current_deadline_s() == 10
        assert current_deadline_s() is None

    def test_cut__marks_every_enclosing_block(self):
        """A cut statement makes the whole request give up on the database, not just the block."""
        with client_deadline(10):
            outer = current_deadline()
            with client_deadline(1):
                current_deadline().mark_cut()
            assert outer.cut
        with client_deadline(10):
            assert not current_deadline().cut  # the next request starts afresh


CUT = r"did not answer within 0\.5 s"


@pytest.mark.django_db(transaction=True)
class TestPostgresqlBackend:
    def test_slow_statement__cut_at_the_deadline_and_the_block_does_not_reconnect(self):
        """pg_sleep(30) under a 0.5 s deadline fails at once, saying so; no reconnect follows."""
        if connection.vendor != "postgresql":
            pytest.skip("the PostgreSQL backend's watchdog; CI's PostgreSQL pass runs this")
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            (sleeper,) = cursor.fetchone()
        started = time.monotonic()
        with client_deadline(0.5):
            with (
                pytest.raises(OperationalError, match=CUT),
                connection.cursor() as cursor,
            ):
                cursor.execute("SELECT pg_sleep(30)")
            assert time.monotonic() - started < 10
            connection.close_if_unusable_or_obsolete()
            with pytest.raises(OperationalError, match=CUT):
                connection.ensure_connection()
        with connection.cursor() as cursor:  # outside the block: a fresh connection
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
            # The server sleeps on for the cut session: end it, or the test database stays busy.
            cursor.execute("SELECT pg_terminate_backend(%s)", [sleeper])
