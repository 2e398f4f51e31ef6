"""Reports who the plugin runs as. Imports only modules the sandbox host already holds, so
it works under SANDBOX_RUN_AS even where the user cannot read the interpreter's stdlib."""

import os
import resource


def identity():
    with open("written-by-plugin.txt", "w") as handle:  # the call directory is writable
        handle.write("x")
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups()}


def raise_own_memory_limit():
    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    return "raised"


def import_unloaded_stdlib_module():
    # Nothing the host (or coverage inside it) loads: importing it must read the stdlib.
    import colorsys

    return colorsys.__name__
