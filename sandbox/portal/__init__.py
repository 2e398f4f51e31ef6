"""Portal side: what runs in the caller's process (threads, sockets, logging are fine here).

    client.py      the public functions, the hosts of this process and their connections
    outcome.py     a host's answer turned into a SandboxResult with an actionable sentence
    wire.py        what a host may send, declared once and checked on arrival
    spawn.py       starting hosts from one long-lived thread, and the janitor
    leftovers.py   processes and directories that hosts and their plugins left behind
    janitor.py     the process that cleans up once its portal is gone

The janitor (python -P -m sandbox.portal.janitor) runs this package too: this file imports
nothing.
"""
