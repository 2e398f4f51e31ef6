"""Zygote side: the sandbox host and the call processes it forks. Never imported by the portal
except for the wire constants (``protocol``) and the signal names (``linux``).

Every module here is loaded into the host, and each fork copies the pages the host then
writes: so these modules import only the standard library, and of it nothing heavy (no
``typing``, ``threading``, ``subprocess``, ``logging``, ``socket``, ``selectors``,
``dataclasses``, ``tempfile`` or ``shutil``). Type-only imports sit under
``TYPE_CHECKING = False`` (not ``typing.TYPE_CHECKING``), and this file imports nothing.

    host.py         the host process (python -P -m sandbox.zygote.host): its loop and calls
    child.py        what a forked call process runs (never returns)
    protocol.py     the wire formats both sides share
    linux.py        Linux process controls the os module lacks
    disk.py         measuring a call's working directory in bounded steps
    prefault.py     the empty call a spare rehearses
"""
