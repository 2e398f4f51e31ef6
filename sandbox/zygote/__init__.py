"""Zygote side: the sandbox host and the call processes it forks. Never imported by the portal
except for the wire constants (``protocol``) and the signal names (``linux``).

Every module here is loaded into the host, and each fork copies the pages the host then
writes: so these modules import only the standard library, and of it nothing heavy (no
``typing``, ``threading``, ``subprocess``, ``logging``, ``socket``, ``selectors``,
``dataclasses``, ``tempfile`` or ``shutil``). Type-only imports sit under
``TYPE_CHECKING = False`` (not ``typing.TYPE_CHECKING``), and this file imports nothing.

    host.py         the host process (python -P -m sandbox.zygote.host): its loop and calls
    startup.py      setting the host up before it serves: isolation, user, warm-up
    portal_link.py  the host's end of the portal's socket
    poller.py       epoll with a handler per fd
    spares.py       call processes forked ahead of time
    calldirs.py     the calls' private working directories
    reaper.py       reaping children, killing process groups, sweeping escaped processes
    calls.py        a running call's state: output tails, deadline, disk budget
    proc.py         /proc files of a process, re-read without reopening
    resident.py     a resident process (python -P -m sandbox.zygote.resident): warm-up once,
                    then its calls in itself, one at a time (resident mode)
    child.py        what a forked call process runs (never returns)
    envelope.py     what a call process says of its call, and its value, encoded and capped
    protocol.py     the wire formats both sides share
    linux.py        Linux process controls the os module lacks
    disk.py         measuring a call's working directory in bounded steps
    cgroup.py       memory_mb by a per-call cgroup v2 memory.max, where one is delegated
    prefault.py     the empty call a spare rehearses
"""
