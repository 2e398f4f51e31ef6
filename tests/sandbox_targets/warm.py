"""Preload warm-ups and the plugin functions that use what they cached."""

import ctypes
import os
import time

STATE = {}


def _log_attempt(log_path):
    if log_path:
        with open(log_path, "a") as handle:
            handle.write(f"{os.getpid()}\n")


def warm(tag, delay=0.0, log_path=None):
    _log_attempt(log_path)
    time.sleep(delay)  # the "heavy import"
    region = os.environ.get("SANDBOX_TEST_REGION")  # what a warm-up sees of the environment
    STATE.update(tag=tag, warm_pid=os.getpid(), warmed_at=time.time(), counter=0, region=region)


def warm_raises(log_path, delay=0.0):
    _log_attempt(log_path)
    time.sleep(delay)
    raise RuntimeError("cannot load model weights")


def warm_segfaults(log_path):
    _log_attempt(log_path)
    ctypes.string_at(0)


def warm_exits(log_path):
    _log_attempt(log_path)
    os._exit(3)


def state():
    return dict(STATE, pid=os.getpid())


def bump():
    STATE["counter"] += 1
    return STATE["counter"]


def crash():
    ctypes.string_at(0)
