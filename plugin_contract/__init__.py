"""The plugin contract, declared once for both sides of the Django boundary.

The plugin-side loader (``plugin_contract.loader``, run only in sandbox processes) checks a
plugin's declarations against these; the portal (discovery, the registry's columns, the
checks of the loader's report in plugins_app/untrusted.py) uses the same values. Standard
library only and import-light: the sandbox host imports it with the loader, and this file
imports nothing of the loader.
"""

import re

# Names become module names in the plugin host and parts of the portal's URLs.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_NAME_CHARS = 200  # Plugin.name's max_length
MAX_VERSION_CHARS = 100  # Plugin.version's max_length
REQUIRE_KEYS = ("modules", "gpu", "files", "env")  # what `requires` may declare

# The loader's report (plugin_contract.loader.load_plugin): its statuses, stages, the kinds
# of missing item, and every key the portal reads.
LOAD_STATUSES = ("ok", "unavailable", "failed")
LOAD_STAGES = ("import", "declarations", "requires", "setup")
MISSING_KINDS = ("module", "library", "entry_point", "source", "env", "gpu", "file")
REPORT_KEYS = frozenset(
    {
        "status",
        "stage",
        "name",
        "version",
        "description",
        "requires",
        "limits",
        "missing",
        "error_type",
        "message",
        "where",
    }
)

__all__ = [
    "LOAD_STAGES",
    "LOAD_STATUSES",
    "MAX_NAME_CHARS",
    "MAX_VERSION_CHARS",
    "MISSING_KINDS",
    "NAME_PATTERN",
    "REPORT_KEYS",
    "REQUIRE_KEYS",
]
