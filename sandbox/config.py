"""Sandbox-wide tunables: one dataclass, read from the environment or set in code."""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "DEFAULT_ENV_PASS",
    "DEFAULT_ENV_SECRET",
    "DEFAULT_RESULT_GLOBALS",
    "EnvVerdict",
    "SandboxConfig",
    "env_verdict",
    "scrub_environment",
]

# What any process needs, passed when the portal has it (fnmatch patterns, case-sensitive).
DEFAULT_ENV_PASS: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TERM",
    "COLUMNS",
    "LINES",
    "NO_COLOR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",  # the CA bundles TLS through those proxies may need
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "LD_LIBRARY_PATH",  # an interpreter built with a shared libpython may not start without it
    "CUDA_VISIBLE_DEVICES",  # withheld, plugins would use every GPU instead of the portal's
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONPYCACHEPREFIX",
    "PYTHONHASHSEED",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "PYTHONUNBUFFERED",
    "PYTHONWARNINGS",
    "PYTHONFAULTHANDLER",
    "COVERAGE_PROCESS_START",  # coverage measures the sandbox's own processes (the test suite)
    "COVERAGE_PROCESS_CONFIG",
)

# Names that look like secrets or like the portal's own connections (fnmatch patterns,
# case-insensitive): never passed, even when a plugin declares them, unless the operator
# names them in SANDBOX_ENV_ALLOW.
DEFAULT_ENV_SECRET: tuple[str, ...] = (
    "*PASS*",
    "*_PWD",
    "*SECRET*",
    "*TOKEN*",
    "*KEY*",
    "*CREDENTIAL*",
    "*PRIVATE*",
    "*AUTH*",
    "*BEARER*",
    "*COOKIE*",
    "*SESSION*",
    "PAT",
    "*_PAT",
    "*_PAT_*",
    "*_DSN",
    "DATABASE_*",
    "DB_*",
    "REDIS_*",
    "*BROKER*",
    "CELERY_*",
    "AMQP_*",
    "RABBITMQ_*",
    "DJANGO_*",
)

# A value such as scheme://user:password@host carries a password whatever its name.
_URL_WITH_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]*:[^/@\s]*@")


class EnvVerdict(enum.StrEnum):
    """Whether an environment variable reaches plugin processes, and if not, why."""

    PASSED = "passed"
    DENIED = "denied"  # SANDBOX_ENV_DENY names it
    SECRET = "secret"  # it looks like a secret and SANDBOX_ENV_ALLOW does not name it
    UNLISTED = "unlisted"  # no process needs it, the operator did not allow it, nobody declared it


# Globals a plugin's pickled return value may reference when it is rebuilt in the portal.
# Anything else would make the portal import plugin code, which the sandbox exists to avoid.
DEFAULT_RESULT_GLOBALS: tuple[str, ...] = (
    "builtins.bool",
    "builtins.bytes",
    "builtins.dict",
    "builtins.float",
    "builtins.int",
    "builtins.list",
    "builtins.str",
    "builtins.tuple",
    "builtins.bytearray",
    "builtins.complex",
    "builtins.frozenset",
    "builtins.set",
    "builtins.slice",
    "builtins.range",
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.deque",
    "datetime.date",
    "datetime.datetime",
    "datetime.time",
    "datetime.timedelta",
    "datetime.timezone",
    "decimal.Decimal",
    "fractions.Fraction",
    "uuid.UUID",
    "pathlib.PurePosixPath",
    "pathlib.PosixPath",
)

DEFAULT_MAX_WARM_HOSTS = 16  # each idle warm host holds its imports (often 100s of MiB)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Process-wide sandbox settings (per-call limits live in ``Limits``).

    env_pass:         fnmatch patterns (case-sensitive) of the environment names every host
                      and plugin gets: what a process needs (PATH, HOME, locale, proxies,
                      Python's own variables). Nothing else of the portal's environment
                      passes unless allowed or declared (``Preload.env``).
    env_secret:       patterns (case-insensitive) of names that look like secrets: never
                      passed, even when listed above or declared, unless ``env_allow``
                      names them. A value that is a URL with a password counts as a secret.
    env_allow:        patterns (case-insensitive) the operator passes in addition, secret-
                      looking or not (``SANDBOX_ENV_ALLOW``).
    env_deny:         patterns (case-insensitive) never passed, whoever allows or declares
                      them (``SANDBOX_ENV_DENY``).
    no_network:       run plugins in an empty network namespace (``SANDBOX_NO_NETWORK=1``).
    run_as:           user name to drop to in the plugin process when the host is root
                      (``SANDBOX_RUN_AS=nobody``).
    grace_s:          how long past ``timeout_s`` the caller waits for a host before it
                      declares the host wedged, kills it and returns ``sandbox_failure``.
    start_timeout_s:  how long a fresh host may take to start and answer its handshake.
    warmup_timeout_s: how long a ``Preload`` warm-up may take.
    tmp_dir:          where per-call working directories are made (default: $TMPDIR or
                      /tmp). A tmpfs makes each call's directory cheaper.
    spare_children:   call processes each host keeps forked and set up in advance, so a
                      call does not wait for fork; 0 forks on demand.
    python:           interpreter used for hosts.
    result_format:    how return values travel: "json" (the default: data only, parsed with
                      bounded size, so nothing a plugin returns can run in the portal) or
                      "pickle" (for trusted code only: a warm host runs plugin code and could
                      send any pickle; types are limited to ``result_globals``, but the
                      parsed size is not bounded by the bytes).
    result_globals:   with result_format="pickle": "module.name" globals a return value's
                      pickle may reference; the portal refuses others (``unserialisable``).
    max_warm_hosts:   Preload warm hosts and resident processes kept per portal process,
                      together; starting one more stops the least recently used idle warm
                      host or resident pool (``SANDBOX_MAX_WARM_HOSTS``).
    bytecode_cache:   when Python may not write bytecode beside the source
                      (``PYTHONDONTWRITEBYTECODE``), keep each host's compiled plugin modules
                      in a private directory instead, so calls do not recompile them
                      (``SANDBOX_BYTECODE_CACHE=0`` turns it off).
    """

    env_pass: tuple[str, ...] = DEFAULT_ENV_PASS
    env_secret: tuple[str, ...] = DEFAULT_ENV_SECRET
    env_allow: tuple[str, ...] = ()
    env_deny: tuple[str, ...] = ()
    no_network: bool = False
    run_as: str | None = None
    grace_s: float = 5.0
    start_timeout_s: float = 30.0
    warmup_timeout_s: float = 300.0
    tmp_dir: str | None = None
    spare_children: int = 1
    python: str = sys.executable
    result_format: str = "json"
    result_globals: tuple[str, ...] = DEFAULT_RESULT_GLOBALS
    max_warm_hosts: int = DEFAULT_MAX_WARM_HOSTS
    bytecode_cache: bool = True

    def __post_init__(self) -> None:
        for name in ("env_pass", "env_secret", "env_allow", "env_deny", "result_globals"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise TypeError(f"SandboxConfig.{name} must be a sequence of strings")
            object.__setattr__(self, name, tuple(value))
        if self.result_format not in ("json", "pickle"):
            raise ValueError(
                "SandboxConfig.result_format must be 'json' or 'pickle', "
                f"got {self.result_format!r}"
            )
        if not isinstance(self.spare_children, int) or not 0 <= self.spare_children <= 64:
            raise ValueError(
                f"SandboxConfig.spare_children must be 0..64, got {self.spare_children!r}"
            )
        if (
            isinstance(self.max_warm_hosts, bool)
            or not isinstance(self.max_warm_hosts, int)
            or self.max_warm_hosts < 1
        ):
            raise ValueError(
                f"SandboxConfig.max_warm_hosts (SANDBOX_MAX_WARM_HOSTS) must be a whole "
                f"number >= 1, got {self.max_warm_hosts!r}"
            )
        for name in ("grace_s", "start_timeout_s", "warmup_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"SandboxConfig.{name} must be a positive number, got {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SandboxConfig:
        """Settings from ``SANDBOX_ENV_DENY``, ``SANDBOX_ENV_ALLOW`` (comma-separated),
        ``SANDBOX_NO_NETWORK`` (1/0), ``SANDBOX_RUN_AS`` (user name),
        ``SANDBOX_MAX_WARM_HOSTS`` (a whole number) and ``SANDBOX_BYTECODE_CACHE`` (1/0)."""
        environ = os.environ if environ is None else environ
        return cls(
            env_allow=_split(environ.get("SANDBOX_ENV_ALLOW", "")),
            env_deny=_split(environ.get("SANDBOX_ENV_DENY", "")),
            no_network=_flag(environ, "SANDBOX_NO_NETWORK"),
            run_as=environ.get("SANDBOX_RUN_AS", "").strip() or None,
            max_warm_hosts=_whole(environ, "SANDBOX_MAX_WARM_HOSTS", DEFAULT_MAX_WARM_HOSTS),
            bytecode_cache=_flag(environ, "SANDBOX_BYTECODE_CACHE", default=True),
        )

    def replace(self, **changes: Any) -> SandboxConfig:
        return dataclasses.replace(self, **changes)


def scrub_environment(
    environ: Mapping[str, str], config: SandboxConfig, declared: Iterable[str] = ()
) -> dict[str, str]:
    """What plugin processes see of ``environ``: the variables ``env_verdict`` passes.

    ``declared`` are exact names a plugin needs (its ``requires.env``, via ``Preload.env``).
    """
    policy = _Policy(config, declared)
    return {
        name: value
        for name, value in environ.items()
        if policy.verdict(name, value) is EnvVerdict.PASSED
    }


def env_verdict(
    name: str, value: str, config: SandboxConfig, declared: Iterable[str] = ()
) -> EnvVerdict:
    """Whether the variable ``name=value`` reaches a plugin that declared ``declared``."""
    return _Policy(config, declared).verdict(name, value)


class _Policy:
    """The configuration's patterns, prepared once for the names of one environment."""

    def __init__(self, config: SandboxConfig, declared: Iterable[str]) -> None:
        self.passed = config.env_pass
        self.secret = [p.upper() for p in config.env_secret]
        self.allow = [p.upper() for p in config.env_allow]
        self.deny = [p.upper() for p in config.env_deny]
        self.declared = frozenset(declared)

    def verdict(self, name: str, value: str) -> EnvVerdict:
        upper = name.upper()
        if _matches(upper, self.deny):
            return EnvVerdict.DENIED
        if _matches(upper, self.allow):
            return EnvVerdict.PASSED  # the operator's explicit word, even for a secret-looking name
        if _matches(upper, self.secret) or _URL_WITH_PASSWORD.search(value):
            return EnvVerdict.SECRET
        if name in self.declared or any(fnmatch.fnmatchcase(name, p) for p in self.passed):
            return EnvVerdict.PASSED
        return EnvVerdict.UNLISTED


def _matches(upper_name: str, upper_patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(upper_name, p) for p in upper_patterns)


def private_cache_dir(*parts: str) -> str | None:
    """A directory under ``$XDG_CACHE_HOME`` (default ``~/.cache``)/portal-sandbox that only
    this user can write, made if missing; None when there is no such place."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "portal-sandbox", *parts)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None  # someone else's, or writable by others: never load bytecode from it
    return path


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _flag(environ: Mapping[str, str], name: str, default: bool = False) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name} must be 1 or 0 (or true/false), got {environ[name]!r}")


def _whole(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {environ[name]!r}") from None
