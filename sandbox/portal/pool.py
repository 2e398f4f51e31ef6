"""The hosts of one portal process: one per Preload value (and one for calls without), each
started on first use, restarted once when it died between calls, evicted when warm hosts
and resident processes are too many."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import threading
import time
from typing import Any

from sandbox.cancel import CancelToken
from sandbox.config import SandboxConfig
from sandbox.limits import Limits
from sandbox.portal.connection import HostConnection, NotDelivered
from sandbox.portal.outcome import CallReport, build_result, cancelled_before_start, elapsed_ms
from sandbox.portal.resident import RESIDENT, ResidentPool
from sandbox.portal.start_failure import StartFailure
from sandbox.portal.wire import lost_call
from sandbox.result import SandboxResult
from sandbox.targets import Preload

__all__ = ["FORK", "HostPool"]

FORK = "fork"  # SandboxResult.mode of a call forked from a host

log = logging.getLogger("sandbox")


@dataclasses.dataclass(eq=False)
class Slot:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    host: HostConnection | None = None
    attempts: int = 0
    last_failure: StartFailure | None = None
    last_used: float = 0.0  # monotonic; picks the warm host to evict


class HostPool:
    """This process's hosts: one per Preload (and one without), started on demand; warm hosts
    and resident processes, together, evicted least recently used past
    SandboxConfig.max_warm_hosts."""

    def __init__(self, config: SandboxConfig) -> None:
        self.pid = os.getpid()
        self.config = config
        self.result_globals = frozenset(config.result_globals)
        self._lock = threading.Lock()
        self._slots: dict[Preload | None, Slot] = {}
        self._resident: dict[Preload, ResidentPool] = {}
        self._ids = itertools.count(1)

    def call(
        self,
        name: str,
        payload: bytes,
        limits: Limits,
        preload: Preload | None,
        started: float,
        cancel: CancelToken | None = None,
    ) -> SandboxResult:
        """A call forked from the host of ``preload``, or run by one of its resident processes
        when it has a Resident policy; the result says which (``mode``)."""
        if preload is not None and preload.resident is not None:
            result = self._resident_pool(preload).call(
                name, payload, limits, started, next(self._ids), cancel
            )
            result.mode = RESIDENT
        else:
            result = self._fork_call(name, payload, limits, preload, started, cancel)
            result.mode = FORK
        return result

    def _resident_pool(self, preload: Preload) -> ResidentPool:
        with self._lock:
            pool = self._resident.get(preload)
            if pool is None:
                pool = self._resident[preload] = ResidentPool(
                    preload, self.config, self.result_globals, self._evict_warm_hosts
                )
            return pool

    def _fork_call(
        self,
        name: str,
        payload: bytes,
        limits: Limits,
        preload: Preload | None,
        started: float,
        cancel: CancelToken | None,
    ) -> SandboxResult:
        wait_s = limits.timeout_s + self.config.grace_s
        for attempt in (1, 2):
            if cancel is not None and cancel.cancelled:  # before a host start, which may be slow
                return cancelled_before_start(name, elapsed_ms(started))
            host = self._host_for(preload, limits.timeout_s)
            if isinstance(host, StartFailure):
                return host.result(name, elapsed_ms(started))
            try:
                header, blobs = host.request(next(self._ids), limits, payload, name, wait_s, cancel)
            except NotDelivered as exc:
                # The host died between calls: restart it once, the call never started.
                if attempt == 1:
                    continue
                header, blobs = lost_call(f"the sandbox host was lost: {exc}"), {}
            report = CallReport(name, limits, header, blobs, self.config.result_format)
            report.import_hint = host.import_hint
            result = build_result(report, elapsed_ms(started), self.result_globals, host.warnings)
            result.warmup_value = host.warmup_value
            warmup = host.take_warmup_output()
            if warmup is not None:  # the host started for this call: its warm-up's output too
                result.stdout = _tail(warmup[0] + result.stdout, limits.output_bytes)
                result.stderr = _tail(warmup[1] + result.stderr, limits.output_bytes)
            return result
        raise AssertionError("unreachable")

    def _slot(self, preload: Preload | None) -> Slot:
        with self._lock:
            slot = self._slots.get(preload)
            if slot is None:
                slot = self._slots[preload] = Slot()
            return slot

    def _host_for(self, preload: Preload | None, warmup_s: float) -> HostConnection | StartFailure:
        while True:
            slot = self._slot(preload)
            slot.last_used = time.monotonic()
            host = slot.host
            if host is not None and host.usable:
                return host  # fast path, no lock: usable hosts are only ever replaced
            seen = slot.attempts
            with slot.lock:
                # Discarded (or shut down) since we looked it up: a host started in it
                # would be invisible to discard_preload/shutdown_sandbox. Use the new slot.
                if self._is_registered(preload, slot):
                    return self._start_in(slot, preload, seen, warmup_s)

    def _is_registered(self, preload: Preload | None, slot: Slot) -> bool:
        with self._lock:
            return self._slots.get(preload) is slot

    def _start_in(
        self, slot: Slot, preload: Preload | None, seen: int, warmup_s: float
    ) -> HostConnection | StartFailure:
        """Under ``slot.lock``: the slot's host, or start one (at most one attempt per call)."""
        if slot.host is not None and slot.host.usable:
            return slot.host
        if slot.attempts != seen and slot.last_failure is not None:
            return slot.last_failure  # we waited on someone else's attempt: that was ours
        slot.attempts += 1
        if preload is not None:
            self._evict_warm_hosts(keep=slot)
        host = HostConnection(preload, self.config)
        failure = host.start(warmup_s)
        slot.host = None if failure else host
        slot.last_failure = failure
        return failure or host

    def _evict_warm_hosts(self, keep: Slot | ResidentPool) -> None:
        """Make room for one more warm host or resident process: drain the least recently
        used idle warm hosts and idle resident pools (all of a pool's processes)."""
        while True:
            with self._lock:
                warm = [
                    (slot.last_used, key, slot)
                    for key, slot in self._slots.items()
                    if key is not None and slot is not keep and slot.host is not None
                ]
                pools = list(self._resident.items())
                # The pool making room counts its running processes, not the one it starts.
                total = len(warm) + sum(pool.processes() for _, pool in pools)
                if total < self.config.max_warm_hosts:
                    return
                idle: list[tuple[float, Preload, Slot | ResidentPool]] = [
                    entry for entry in warm if entry[2].host is not None and entry[2].host.idle
                ]
                idle += [
                    (pool.last_used, key, pool)
                    for key, pool in pools
                    if pool is not keep and pool.evictable()
                ]
                if not idle:
                    return  # all busy: exceed the cap rather than make calls wait
                _, key, victim = min(idle, key=lambda entry: entry[0])
            if isinstance(victim, ResidentPool):
                if victim.evict():  # False: a call took one meanwhile; look again
                    log.info(
                        "sandbox: max_warm_hosts reached, stopping the resident processes of %s",
                        key,
                    )
                continue
            # Never wait on another slot's lock while holding ours (deadlock); a slot whose
            # lock is held is busy starting a host: leave it and exceed the cap for now.
            if not victim.lock.acquire(blocking=False):
                return
            try:
                with self._lock:
                    if self._slots.get(key) is not victim:
                        continue  # discarded meanwhile
                    del self._slots[key]
                host, victim.host = victim.host, None
            finally:
                victim.lock.release()
            if host is not None:
                log.info("sandbox: max_warm_hosts reached, stopping the warm host of %s", key)
                host.drain()

    def discard(self, preload: Preload) -> bool:
        with self._lock:
            resident = self._resident.pop(preload, None)
            slot = self._slots.pop(preload, None)
        if resident is not None:
            resident.close(drain=True)  # running calls finish first
            return True
        if slot is None:
            return False
        with slot.lock:
            host, slot.host = slot.host, None
        if host is None:
            return False
        host.drain()
        return True

    def shutdown(self) -> None:
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
            residents = list(self._resident.values())
            self._resident.clear()
        for resident in residents:
            resident.close(drain=False)
        for slot in slots:
            with slot.lock:
                host, slot.host = slot.host, None
            if host is not None:
                host.stop()

    def abandon(self) -> None:
        for resident in self._resident.values():
            resident.abandon()
        self._resident = {}
        for slot in self._slots.values():
            if slot.host is not None:
                slot.host.abandon()
        self._slots = {}

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            slots = list(self._slots.values())
            residents = list(self._resident.values())
        hosts = [dict(slot.host.status(), mode=FORK) for slot in slots if slot.host is not None]
        return hosts + [status for pool in residents for status in pool.status()]


def _tail(text: str, limit: int) -> str:
    return text[-limit:] if len(text) > limit else text
