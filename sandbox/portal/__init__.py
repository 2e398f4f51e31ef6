"""Portal side: what runs in the caller's process (threads, sockets, logging are fine here).

    client.py      the public functions (run_plugin_sandboxed, configure_sandbox, ...)
    pool.py        the hosts of this process: one per Preload, started and evicted on demand
    connection.py  one host process and its socket: handshake, requests, answers, loss
    start_failure.py  why a host could not start, as the result of the calls that needed it
    outcome.py     a host's answer turned into a SandboxResult with an actionable sentence
    wire.py        what a host may send, declared once and checked on arrival
    spawn.py       starting hosts from one long-lived thread, and the janitor
    leftovers.py   processes and directories that hosts and their plugins left behind
    janitor.py     the process that cleans up once its portal is gone

The janitor (python -P -m sandbox.portal.janitor) runs this package too: this file imports
nothing.
"""
