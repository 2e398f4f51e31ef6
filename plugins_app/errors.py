"""Domain errors raised by the services; each has a label an interface can show or map."""

from plugins_app.storable import shown


class PluginError(Exception):
    """Base of the registry's domain errors; `str(error)` is an actionable sentence."""

    label = "plugin error"


class PluginNotFound(PluginError):
    label = "not found"

    def __init__(self, name: str) -> None:
        super().__init__(f"Plugin '{name}' not found")
        self.name = name


class InvalidName(PluginNotFound):
    """A name no plugin can have (NUL, a lone surrogate, too long): not looked up at all."""

    def __init__(self, name: str, problem: str) -> None:
        PluginError.__init__(
            self, f"Plugin '{shown(name)}' not found: no plugin can have this name, since {problem}"
        )
        self.name = name


class RunNotFound(PluginError):
    label = "not found"

    def __init__(self, run_id: object) -> None:
        super().__init__(f"Run {run_id} not found")
        self.run_id = run_id


class IllegalTransition(PluginError):
    """A state change the transition table does not allow; nothing was written."""

    label = "illegal transition"


class RunAlreadyFinished(IllegalTransition):
    """Cancelling a run that already ended (a 409); nothing was written."""

    label = "already finished"


class PluginRefused(PluginError):
    """The plugin cannot take runs now (disabled or unavailable); no run was counted."""

    label = "refused"


class InvalidParams(PluginError):
    """A run's params (or timeout) are not acceptable input; no run was created."""

    label = "invalid params"


class TooManyVanished(PluginError):
    """A load would mark more plugins vanished at once than is plausible; nothing was written."""

    label = "too many vanished"


class InvalidPolicy(PluginError):
    """An operator's retry policy or quarantine threshold is not acceptable; nothing changed."""

    label = "invalid policy"


class NotQuarantined(PluginError):
    """Lifting or extending the quarantine of a plugin that is not quarantined."""

    label = "not quarantined"
