"""A foreground command's stop on SIGTERM or Ctrl-C: asked for at any moment, it ends the wait."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from plugins_app.management.stop_signals import StopSignals

ROOT = Path(__file__).resolve().parents[2]


def test_signal_during_the_wait__ends_it_at_once():
    """A SIGTERM arriving while the command waits ends the wait, long before its timeout."""
    with StopSignals(signals=(signal.SIGUSR1,)) as stop:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        started = time.monotonic()
        assert stop.wait(30) is True
        assert time.monotonic() - started < 10
        assert stop.is_set()


def test_signal_before_the_wait__not_lost():
    """A signal that lands between two waits ends the next wait (it is kept, not missed)."""
    with StopSignals(signals=(signal.SIGUSR1,)) as stop:
        assert stop.wait(0) is False
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.wait(30) is True


def test_the_end__former_handler_back():
    """Once the command's loop is over, a signal goes to the handler that was there before."""
    former = signal.getsignal(signal.SIGUSR1)
    with StopSignals(signals=(signal.SIGUSR1,)):
        assert signal.getsignal(signal.SIGUSR1) is not former
    assert signal.getsignal(signal.SIGUSR1) is former


# Waits in a loop while the parent sends signals as fast as it can: a handler that takes a
# lock (threading.Event.set) deadlocks the loop it interrupts when it lands while that same
# thread holds the lock, once in a few thousand signals.
STORM = """
import signal, sys, time
from plugins_app.management.stop_signals import StopSignals
stop = StopSignals(signals=(signal.SIGUSR1,))
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    stop.wait(0.00001)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # the storm goes on while this exits
print("done", flush=True)
"""


def test_signal_storm__never_deadlocks_the_waiting_thread():
    """Thousands of signals landing anywhere in a waiting loop never hang it."""
    child = subprocess.Popen(
        [sys.executable, "-c", STORM, "2"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        while child.poll() is None:
            child.send_signal(signal.SIGUSR1)
            time.sleep(0.0002)
        assert child.stdout.read() == "done\n"
        assert child.returncode == 0
    finally:
        child.kill()
        child.wait()
