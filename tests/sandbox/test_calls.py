"""Sandboxed calls: values cross the boundary intact, and each way a plugin can end maps
to the documented Outcome with an actionable message."""

import json
import os
import sys

import pytest

from sandbox import (
    Limits,
    Outcome,
    Preload,
    SandboxConfig,
    SandboxResult,
    configure_sandbox,
    discard_preload,
    run_plugin_sandboxed,
    shutdown_sandbox,
)
from tests.sandbox_targets import basic

BASIC = "tests.sandbox_targets.basic"
WARM = "tests.sandbox_targets.warm"
FAST = Limits(timeout_s=10)


def call(target, *args, **kwargs) -> SandboxResult:
    kwargs.setdefault("limits", FAST)
    return run_plugin_sandboxed(target, *args, **kwargs)


class TestValuesCrossTheBoundary:
    def test_string_target_returns_value(self):
        """A 'module:function' target returns its value, exit code 0, duration and memory use."""
        result = call(f"{BASIC}:add", 2, 3)
        assert result.ok, result.error
        assert result.outcome is Outcome.OK
        assert result.value == 5
        assert result.error is None and result.error_type is None
        assert result.exit_code == 0
        assert result.duration_ms > 0
        assert result.peak_rss_kb and result.peak_rss_kb > 0
        assert result.target == f"{BASIC}:add"

    def test_args_kwargs_unicode_and_nested_data_round_trip(self):
        """Unicode, nested containers and big integers reach the plugin and come back intact."""
        args = ("héllo wörld ✓ 漢字 🐍", {"nested": [1, 2.5, None, True, {"deep": ["x"]}]})
        kwargs = {"mapping": {"ключ": "значение", "n": -(2**70)}, "empty": []}
        result = call(f"{BASIC}:echo", *args, **kwargs)
        assert result.ok, result.error
        assert result.value == {"args": list(args), "kwargs": kwargs}  # JSON: a tuple is a list

    def test_callable_targets_by_reference(self):
        """A function, a bound method or a classmethod may be passed as the target itself."""
        assert call(basic.add, 1, 1).value == 2
        assert call(basic.Greeter("Hi").greet, "Ada").value == "Hi, Ada"
        assert call(basic.Greeter.shout, "ada").value == "ADA"

    def test_dotted_attribute_in_string_target(self):
        """A string target may name a class attribute, as in 'module:Greeter.shout'."""
        assert call(f"{BASIC}:Greeter.shout", "x").value == "X"

    def test_string_target_is_not_imported_in_the_parent(self):
        """A string target is imported only in the sandbox child, never in the calling process."""
        module = "tests.sandbox_targets.parent_must_not_import"
        result = call(f"{module}:value")
        assert result.value == "imported in the child"
        assert module not in sys.modules

    def test_reserved_keywords_are_consumed_and_the_rest_reach_the_target(self):
        """limits= and preload= go to the sandbox; other keywords, even target=, to the plugin."""
        result = run_plugin_sandboxed(f"{BASIC}:echo", 1, target="t", limits=FAST, preload=None)
        assert result.value == {"args": [1], "kwargs": {"target": "t"}}

    def test_limits_may_be_a_mapping(self):
        """Limits may be given as a plain dict of the limits to change."""
        assert run_plugin_sandboxed(f"{BASIC}:add", 1, 2, limits={"timeout_s": 5}).value == 3

    def test_to_dict_of_a_real_result_is_json(self):
        """A real call's result turns into a dict that json.dumps accepts."""
        data = call(f"{BASIC}:echo", "text", (1, 2)).to_dict()
        assert json.loads(json.dumps(data))["outcome"] == "ok"


class TestPluginFailuresMapToOutcomes:
    def test_exception_is_error_with_type_message_and_location(self):
        """A plugin exception is an ERROR with type, message, file:line, target and traceback."""
        result = call(f"{BASIC}:divide", 1, 0)
        assert not result.ok
        assert result.outcome is Outcome.ERROR
        assert result.value is None
        assert result.error_type == "ZeroDivisionError"
        assert "division by zero" in result.error
        assert "basic.py:" in result.error  # file:line where it was raised
        assert f"'{BASIC}:divide'" in result.error
        assert "ZeroDivisionError" in result.traceback
        assert "return a / b" in result.traceback

    def test_system_exit_is_exited_with_its_code(self):
        """sys.exit(3) in a plugin ends the call as EXITED with exit code 3."""
        result = call(f"{BASIC}:raise_system_exit", 3)
        assert result.outcome is Outcome.EXITED
        assert result.exit_code == 3
        assert result.error_type == "SystemExit"
        assert "exit" in result.error.lower()

    def test_keyboard_interrupt_is_an_error(self):
        """A KeyboardInterrupt raised by a plugin is an ordinary ERROR of the call."""
        result = call(f"{BASIC}:raise_keyboard_interrupt")
        assert result.outcome is Outcome.ERROR
        assert result.error_type == "KeyboardInterrupt"

    def test_os_exit_is_exited_and_keeps_output(self):
        """os._exit(7) ends the call as EXITED with code 7, keeping what it printed first."""
        result = call(f"{BASIC}:hard_exit", 7)
        assert result.outcome is Outcome.EXITED
        assert result.exit_code == 7
        assert result.signal is None
        assert "about to exit" in result.stdout

    def test_missing_module_is_an_import_error(self):
        """A target whose module does not exist is an ERROR of type ModuleNotFoundError."""
        result = call("tests.sandbox_targets.does_not_exist:run")
        assert result.outcome is Outcome.ERROR
        assert result.error_type == "ModuleNotFoundError"
        assert "import" in result.error.lower()

    def test_missing_attribute_and_non_callable(self):
        """A missing attribute is an AttributeError; a target that is not callable, a TypeError."""
        assert call(f"{BASIC}:nope").error_type == "AttributeError"
        assert call(f"{BASIC}:not_callable").error_type == "TypeError"

    def test_stdout_and_stderr_are_captured(self):
        """What the plugin prints to stdout and to stderr comes back in the result, apart."""
        result = call(f"{BASIC}:chatty", "to stdout ✓", "to stderr")
        assert result.value == "done"
        assert result.stdout == "to stdout ✓\n"
        assert result.stderr == "to stderr\n"

    def test_unpicklable_return_value(self):
        """A return value that cannot go back as JSON is UNSERIALISABLE, and the error says so."""
        result = call(f"{BASIC}:unpicklable")
        assert result.outcome is Outcome.UNSERIALISABLE
        assert result.error_type
        assert "JSON" in result.error

    def test_oversized_return_value(self):
        """A value over limits.result_bytes is OUTPUT_LIMIT naming that limit, with no value."""
        result = call(f"{BASIC}:big_value", 2_000_000, limits=Limits(result_bytes=1_000_000))
        assert result.outcome is Outcome.OUTPUT_LIMIT
        assert "result_bytes" in result.error
        assert result.value is None

    def test_return_value_of_a_plugin_class_is_refused_by_the_portal(self):
        """An instance of a plugin's own class is refused as UNSERIALISABLE, naming the class."""
        result = call(f"{BASIC}:return_opaque")
        assert result.outcome is Outcome.UNSERIALISABLE
        assert "tests.sandbox_targets.basic.Opaque" in result.error


# Names that leaked through the old deny list, and older ones it did catch.
PORTAL_SECRETS = {
    "DB_PASS": "pw",
    "REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
    "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "PRIVATE_KEY_PEM": "-----BEGIN PRIVATE KEY-----",
    "APIKEY": "k",
    "PASSPHRASE": "p",
    "ACCESS_KEY_ID": "AKIA",
    "GH_PAT": "ghp_x",
    "AUTH": "Basic x",
    "BEARER": "ey",
    "SESSION_COOKIE": "c",
    "SECRET_KEY": "django-secret",
    "DATABASE_URL": "postgres://u:p@h/db",
    "MY_API_TOKEN": "tok",
    "DJANGO_SETTINGS_MODULE": "portal.settings",
}
WARM_UP = "tests.sandbox_targets.warm:warm"


@pytest.fixture
def portal_environment(monkeypatch):
    """Set variables in the portal's environment; hosts started meanwhile see them."""

    def apply(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        shutdown_sandbox()  # hosts capture the environment when they start

    yield apply
    monkeypatch.undo()
    shutdown_sandbox()


def plugin_environment(preload=None) -> dict:
    result = call(f"{BASIC}:environment", preload=preload)
    assert result.ok, result.error
    return result.value


class TestChildEnvironment:
    def test_secrets__never_reach_the_plugin(self, portal_environment):
        """No portal secret reaches a plugin, while PATH, HOME and LANG do."""
        portal_environment(**PORTAL_SECRETS, HOME="/home/portal", LANG="C.UTF-8")
        env = plugin_environment()
        assert sorted(set(PORTAL_SECRETS) & set(env)) == []
        assert (env["HOME"], env["LANG"]) == ("/home/portal", "C.UTF-8")
        assert env["PATH"] == os.environ["PATH"]

    def test_unlisted_variable__withheld(self, portal_environment):
        """A variable nobody allowed or declared stays in the portal."""
        portal_environment(SANDBOX_TEST_VISIBLE="yes")
        assert "SANDBOX_TEST_VISIBLE" not in plugin_environment()

    def test_preload_env__reaches_that_hosts_plugins_only(self, portal_environment):
        """A name a Preload declares reaches its warm-up and calls, not other hosts' calls."""
        portal_environment(SANDBOX_TEST_REGION="eu-west-1")
        warm = Preload(WARM_UP, ("env",), env=("SANDBOX_TEST_REGION",))
        try:
            assert plugin_environment(warm)["SANDBOX_TEST_REGION"] == "eu-west-1"
            assert call(f"{WARM}:state", preload=warm).value["region"] == "eu-west-1"
            assert "SANDBOX_TEST_REGION" not in plugin_environment()
            other = Preload(WARM_UP, ("other",))
            assert "SANDBOX_TEST_REGION" not in plugin_environment(other)
        finally:
            discard_preload(warm)

    def test_preload_env__secret_looking_names_withheld(self, portal_environment):
        """Declaring a portal secret in a Preload's env does not get it to the plugin."""
        portal_environment(**PORTAL_SECRETS)
        warm = Preload(WARM_UP, ("greedy",), env=tuple(PORTAL_SECRETS))
        try:
            assert sorted(set(PORTAL_SECRETS) & set(plugin_environment(warm))) == []
        finally:
            discard_preload(warm)

    def test_sandbox_env_allow__passes_names_and_patterns(self, portal_environment):
        """SANDBOX_ENV_ALLOW passes the names and patterns it lists, secret-looking or not."""
        portal_environment(
            AWS_REGION="eu-west-1",
            ACME_API_KEY="k",
            ACME_OTHER="o",
            SANDBOX_ENV_ALLOW="AWS_REGION, ACME_*",
        )
        old = configure_sandbox(SandboxConfig.from_env())
        try:
            env = plugin_environment()
        finally:
            configure_sandbox(old)
        assert (env["AWS_REGION"], env["ACME_API_KEY"], env["ACME_OTHER"]) == (
            "eu-west-1",
            "k",
            "o",
        )

    def test_sandbox_env_deny__wins_over_allow_and_declarations(self, portal_environment):
        """SANDBOX_ENV_DENY removes a name the operator allowed and a Preload declared."""
        portal_environment(
            ACME_TOKEN="t",
            ACME_HOST="h",
            TZ="UTC",
            SANDBOX_ENV_ALLOW="ACME_*",
            SANDBOX_ENV_DENY="ACME_TOKEN,TZ",
        )
        old = configure_sandbox(SandboxConfig.from_env())
        warm = Preload(WARM_UP, ("deny",), env=("ACME_TOKEN", "TZ"))
        try:
            env = plugin_environment(warm)
        finally:
            discard_preload(warm)
            configure_sandbox(old)
        assert env["ACME_HOST"] == "h"
        assert "ACME_TOKEN" not in env and "TZ" not in env

    def test_cwd_is_a_fresh_directory_removed_afterwards(self):
        """Each call runs in a new temporary working directory, removed once the call ends."""
        first = call(f"{BASIC}:working_directory").value
        second = call(f"{BASIC}:working_directory").value
        assert first["cwd"] != second["cwd"]
        assert first["tempdir"] == first["cwd"]
        assert not os.path.exists(first["cwd"])
        assert first["cwd"] != os.getcwd()

    def test_each_call_gets_a_fresh_process(self):
        """Two calls run in two different processes, neither of them the portal's."""
        first = call(f"{BASIC}:process_info").value
        second = call(f"{BASIC}:process_info").value
        assert first["pid"] != second["pid"] != os.getpid()


class TestProgrammerErrorsRaiseImmediately:
    def test_limits_of_wrong_type(self):
        """limits= that is neither Limits nor a mapping raises TypeError at once."""
        with pytest.raises(TypeError, match="limits"):
            run_plugin_sandboxed(f"{BASIC}:add", 1, 2, limits=5)

    def test_bad_limit_mapping(self):
        """A limits mapping with an unknown key ('timeout') raises ValueError naming it."""
        with pytest.raises(ValueError, match="timeout"):
            run_plugin_sandboxed(f"{BASIC}:add", 1, 2, limits={"timeout": 5})

    def test_preload_of_wrong_type(self):
        """preload= given as a string instead of a Preload raises TypeError at once."""
        with pytest.raises(TypeError, match="preload"):
            run_plugin_sandboxed(f"{BASIC}:add", 1, 2, preload="x:y")

    def test_huge_timeout__raises_value_error_instead_of_a_sandbox_failure(self):
        """timeout_s=1e300 is a mistake in the call: ValueError at once, never sandbox_failure."""
        with pytest.raises(ValueError, match=r"timeout_s.*at most 604800"):
            run_plugin_sandboxed(f"{BASIC}:add", 1, 2, limits={"timeout_s": 1e300})

    def test_malformed_target_string(self):
        """A target string not of the form 'module.path:attribute' raises ValueError saying so."""
        with pytest.raises(ValueError, match=r"module\.path:attribute"):
            run_plugin_sandboxed("not a target")

    def test_target_that_cannot_be_named_by_reference(self):
        """A lambda target raises TypeError: the child must import the target by its name."""
        with pytest.raises(TypeError, match="by reference"):
            run_plugin_sandboxed(lambda: 1)

    def test_unpicklable_argument(self):
        """An argument the child cannot receive, such as a lambda, raises TypeError at once."""
        with pytest.raises(TypeError, match="argument"):
            run_plugin_sandboxed(f"{BASIC}:echo", lambda: 1)

    def test_preload_and_limits_are_reserved__never_reach_the_target(self):
        """A target taking **kwargs gets every keyword except the sandbox's own two."""
        result = run_plugin_sandboxed(
            f"{BASIC}:echo", 1, preload=None, limits={"timeout_s": 10}, target="t", mode="x"
        )
        assert result.ok, result.error
        assert result.value == {"args": [1], "kwargs": {"target": "t", "mode": "x"}}

    @pytest.mark.parametrize("reserved", ["preload", "limits"])
    def test_reserved_keyword_with_a_plugin_value__raises_type_error(self, reserved):
        """A plugin argument that happens to be named preload/limits is refused, not passed."""
        with pytest.raises(TypeError, match=reserved):
            run_plugin_sandboxed(f"{BASIC}:echo", **{reserved: ["plugin", "data"]})
