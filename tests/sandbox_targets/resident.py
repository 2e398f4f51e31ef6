"""Targets for resident mode: a warm-up that counts itself, and calls that report which process
ran them, crash, hang, grow or keep memory."""

import ctypes
import os
import sys
import time

STATE = {"setups": 0, "calls": 0, "kept": []}


def setup(tag):
    STATE["setups"] += 1
    STATE["tag"] = tag
    print(f"setup of {tag} in {os.getpid()}", file=sys.stderr)


def info(note=None):
    STATE["calls"] += 1
    if note:
        print(note)
    return {"pid": os.getpid(), "setups": STATE["setups"], "calls": STATE["calls"]}


def crash():
    ctypes.string_at(0)


def hang():
    time.sleep(3600)


def boom():
    raise ValueError("bad input")


def grow(mb):
    """Allocate (and touch) mb MiB, held until the call ends or the process is killed."""
    block = bytearray(mb * 1024 * 1024)
    time.sleep(5)
    return len(block)


def keep(mb):
    """Keep mb MiB touched in the process after the call returns."""
    STATE["kept"].append(bytearray(mb * 1024 * 1024))
    return {"pid": os.getpid(), "kept_mb": len(STATE["kept"]) * mb}


def setup_touching_cuda(tag=None):
    """A warm-up that leaves a torch whose CUDA reports itself initialised (there is no GPU
    here: a stand-in module says so, as torch would after touching the GPU)."""
    import types

    fake = types.ModuleType("torch")
    fake.cuda = types.SimpleNamespace(is_initialized=lambda: True)
    sys.modules["torch"] = fake


def spin():
    """Burn CPU until killed."""
    while True:
        pass


def burn(cpu_s):
    """Burn about cpu_s seconds of this process's CPU time, then return the pid."""
    end = time.process_time() + cpu_s
    while time.process_time() < end:
        pass
    return {"pid": os.getpid()}


def spin_in_child():
    """Start a child that burns CPU until killed, and wait for it (the call itself idles)."""
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    print(child.pid, flush=True)
    child.wait()


def hold(started, release):
    """Say the call started (a file), then hold the process until the release file appears."""
    with open(started, "w"):
        pass
    while not os.path.exists(release):
        time.sleep(0.01)
    return {"pid": os.getpid()}
