"""Value types of the sandbox: Limits, Outcome, SandboxResult, SandboxConfig, Preload.

These run no process; they pin the contract other engineers code against.
"""

import json
import sys
from pathlib import Path

# This branch has no conftest or pytest `pythonpath`; put the repo root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest

from sandbox import Limits, Outcome, Preload, SandboxConfig, SandboxResult
from sandbox.config import DEFAULT_ENV_DENY, scrub_environment


class TestLimits:
    def test_defaults_are_documented_values(self):
        limits = Limits()
        assert limits.timeout_s == 30
        assert limits.cpu_s == 60
        assert limits.memory_mb == 1024
        assert limits.output_bytes == 64 * 1024
        assert limits.result_bytes == 16 * 1024 * 1024
        assert limits.open_files == 256
        assert limits.file_size_mb == 256

    def test_is_frozen(self):
        with pytest.raises(AttributeError):
            Limits().timeout_s = 1  # type: ignore[misc]

    def test_from_mapping_overrides_only_given_keys(self):
        limits = Limits.from_mapping({"timeout_s": 5, "memory_mb": 512})
        assert limits.timeout_s == 5
        assert limits.memory_mb == 512
        assert limits.cpu_s == Limits().cpu_s

    def test_from_mapping_uses_base(self):
        base = Limits(timeout_s=3)
        limits = Limits.from_mapping({"memory_mb": 100}, base=base)
        assert (limits.timeout_s, limits.memory_mb) == (3, 100)

    def test_from_mapping_names_unknown_key(self):
        with pytest.raises(ValueError, match=r"timeout\b.*known limits.*timeout_s"):
            Limits.from_mapping({"timeout": 5})

    @pytest.mark.parametrize("value", [-1, 0, "5", True, float("nan"), float("inf"), [1]], ids=repr)
    def test_from_mapping_rejects_bad_value_with_its_name(self, value):
        with pytest.raises(ValueError, match="timeout_s"):
            Limits.from_mapping({"timeout_s": value})

    @pytest.mark.parametrize(
        ("name", "maximum"),
        [
            ("timeout_s", 604800),
            ("cpu_s", 604800),
            ("memory_mb", 1024 * 1024),
            ("output_bytes", 64 * 1024 * 1024),
            ("result_bytes", 1024 * 1024 * 1024),
            ("open_files", 1024 * 1024),
            ("file_size_mb", 1024 * 1024),
        ],
    )
    def test_from_mapping_rejects_value_above_maximum__naming_key_value_and_maximum(
        self, name, maximum
    ):
        """A huge limit (e.g. timeout_s=1e300) is refused at once, not turned into a sandbox bug."""
        assert Limits.from_mapping({name: maximum}).as_dict()[name] == maximum
        with pytest.raises(ValueError, match=rf"{name}.*1e\+300.*at most {maximum}\b"):
            Limits.from_mapping({name: 1e300})
        with pytest.raises(ValueError, match=rf"{name}.*at most {maximum}\b"):
            Limits.from_mapping({name: maximum + 1})

    def test_from_mapping_rejects_non_mapping(self):
        with pytest.raises(TypeError):
            Limits.from_mapping([("timeout_s", 1)])  # type: ignore[arg-type]

    def test_constructor_validates_too(self):
        with pytest.raises(ValueError, match="memory_mb"):
            Limits(memory_mb=-5)

    def test_rlimit_style_limits_may_be_none_meaning_unlimited(self):
        limits = Limits.from_mapping({"memory_mb": None, "cpu_s": None})
        assert limits.memory_mb is None and limits.cpu_s is None
        with pytest.raises(ValueError, match="timeout_s"):
            Limits(timeout_s=None)  # type: ignore[arg-type]

    def test_replace(self):
        limits = Limits().replace(timeout_s=2.5)
        assert limits.timeout_s == 2.5
        with pytest.raises(ValueError, match="nope"):
            Limits().replace(nope=1)


class TestOutcomeAndResult:
    def test_outcome_values_are_lowercase_strings(self):
        assert [o.value for o in Outcome] == [
            "ok",
            "error",
            "timeout",
            "memory",
            "crashed",
            "exited",
            "output_limit",
            "unserialisable",
            "sandbox_failure",
        ]
        assert Outcome("output_limit") is Outcome.OUTPUT_LIMIT
        assert Outcome.OK == "ok"

    def test_to_dict_is_json_serialisable(self):
        result = SandboxResult(
            ok=True,
            value={"a": (1, 2), "b": b"\xff", "c": {3}},
            outcome=Outcome.OK,
            duration_ms=1.5,
        )
        data = result.to_dict()
        text = json.dumps(data)
        assert data["outcome"] == "ok"
        assert json.loads(text)["value"]["a"] == [1, 2]

    def test_failed_result_defaults(self):
        result = SandboxResult(ok=False, value=None, outcome=Outcome.TIMEOUT, error="x")
        assert result.stdout == "" and result.stderr == ""
        assert result.signal is None and result.traceback is None
        assert result.warnings == []


class TestEnvironmentScrubbing:
    def test_default_deny_list_covers_the_documented_names(self):
        for pattern in (
            "SECRET_KEY",
            "DATABASE_URL",
            "*PASSWORD*",
            "*SECRET*",
            "*TOKEN*",
            "*_KEY",
            "DJANGO_*",
            "AWS_*",
        ):
            assert pattern in DEFAULT_ENV_DENY

    def test_scrub_removes_denied_names_case_insensitively(self):
        env = {
            "PATH": "/bin",
            "SECRET_KEY": "s",
            "db_password": "p",
            "GITHUB_TOKEN": "t",
            "STRIPE_API_KEY": "k",
            "DJANGO_SETTINGS_MODULE": "x",
            "AWS_REGION": "eu",
            "LANG": "C.UTF-8",
        }
        assert scrub_environment(env, SandboxConfig()) == {"PATH": "/bin", "LANG": "C.UTF-8"}

    def test_allow_list_readmits(self):
        config = SandboxConfig(env_allow=("AWS_REGION",))
        assert scrub_environment({"AWS_REGION": "eu", "AWS_SECRET": "x"}, config) == {
            "AWS_REGION": "eu"
        }

    def test_from_env_reads_comma_separated_lists_and_flags(self):
        config = SandboxConfig.from_env(
            {
                "SANDBOX_ENV_DENY": "FOO_*, BAR",
                "SANDBOX_ENV_ALLOW": "AWS_REGION",
                "SANDBOX_NO_NETWORK": "1",
                "SANDBOX_RUN_AS": "nobody",
            }
        )
        # SANDBOX_ENV_DENY extends the defaults: an operator cannot drop them by accident.
        assert set(DEFAULT_ENV_DENY) <= set(config.env_deny)
        assert {"FOO_*", "BAR"} <= set(config.env_deny)
        assert config.env_allow == ("AWS_REGION",)
        assert config.no_network is True
        assert config.run_as == "nobody"

    def test_from_env_defaults_are_off(self):
        config = SandboxConfig.from_env({})
        assert config.no_network is False
        assert config.run_as is None
        assert config.env_deny == DEFAULT_ENV_DENY

    def test_max_warm_hosts__defaults_to_16_and_reads_the_environment(self):
        """SANDBOX_MAX_WARM_HOSTS caps warm hosts; garbage or < 1 is refused by name."""
        assert SandboxConfig().max_warm_hosts == 16
        assert SandboxConfig.from_env({"SANDBOX_MAX_WARM_HOSTS": "3"}).max_warm_hosts == 3
        for bad in ("many", "0"):
            with pytest.raises(ValueError, match="SANDBOX_MAX_WARM_HOSTS"):
                SandboxConfig.from_env({"SANDBOX_MAX_WARM_HOSTS": bad})

    def test_from_env_rejects_garbage_flag(self):
        with pytest.raises(ValueError, match="SANDBOX_NO_NETWORK"):
            SandboxConfig.from_env({"SANDBOX_NO_NETWORK": "maybe"})


class TestPreload:
    def test_is_hashable_value(self):
        assert Preload("a.b:c", [1, 2]) == Preload("a.b:c", (1, 2))
        assert len({Preload("a.b:c"), Preload("a.b:c", ())}) == 1

    def test_rejects_bad_target(self):
        with pytest.raises(ValueError, match=r"module\.path:attribute"):
            Preload("no_colon")
        with pytest.raises(TypeError):
            Preload(print)  # type: ignore[arg-type]

    def test_rejects_unhashable_args(self):
        with pytest.raises(TypeError, match="hashable"):
            Preload("a:b", ([1],))
