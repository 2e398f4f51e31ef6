"""Value types of the sandbox: Limits, Outcome, SandboxResult, SandboxConfig, Preload.

These run no process; they pin the contract other engineers code against.
"""

import json

import pytest

from sandbox import Limits, Outcome, Preload, SandboxConfig, SandboxResult
from sandbox.config import (
    DEFAULT_ENV_PASS,
    DEFAULT_ENV_SECRET,
    EnvVerdict,
    env_verdict,
    scrub_environment,
)


class TestLimits:
    def test_defaults_are_documented_values(self):
        """Limits() holds the documented defaults (30 s wall clock, 60 s CPU, 1024 MB, ...)."""
        limits = Limits()
        assert limits.timeout_s == 30
        assert limits.cpu_s == 60
        assert limits.memory_mb == 1024
        assert limits.output_bytes == 64 * 1024
        assert limits.result_bytes == 16 * 1024 * 1024
        assert limits.open_files == 256
        assert limits.file_size_mb == 256
        assert limits.disk_mb == 1024

    def test_is_frozen(self):
        """A Limits value cannot be changed once made."""
        with pytest.raises(AttributeError):
            Limits().timeout_s = 1  # type: ignore[misc]

    def test_from_mapping_overrides_only_given_keys(self):
        """Limits.from_mapping changes the keys it is given and keeps the defaults for the rest."""
        limits = Limits.from_mapping({"timeout_s": 5, "memory_mb": 512})
        assert limits.timeout_s == 5
        assert limits.memory_mb == 512
        assert limits.cpu_s == Limits().cpu_s

    def test_from_mapping_uses_base(self):
        """Limits.from_mapping(base=...) starts from the given limits instead of the defaults."""
        base = Limits(timeout_s=3)
        limits = Limits.from_mapping({"memory_mb": 100}, base=base)
        assert (limits.timeout_s, limits.memory_mb) == (3, 100)

    def test_from_mapping_names_unknown_key(self):
        """An unknown key is refused with a message naming it and the known limits."""
        with pytest.raises(ValueError, match=r"timeout\b.*known limits.*timeout_s"):
            Limits.from_mapping({"timeout": 5})

    @pytest.mark.parametrize("value", [-1, 0, "5", True, float("nan"), float("inf"), [1]], ids=repr)
    def test_from_mapping_rejects_bad_value_with_its_name(self, value):
        """A negative, zero, text, boolean, NaN, infinite or list value is refused by limit name."""
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
            ("disk_mb", 1024 * 1024),
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
        """A list of pairs instead of a mapping raises TypeError."""
        with pytest.raises(TypeError):
            Limits.from_mapping([("timeout_s", 1)])  # type: ignore[arg-type]

    def test_constructor_validates_too(self):
        """Limits(memory_mb=-5) is refused as well, naming memory_mb."""
        with pytest.raises(ValueError, match="memory_mb"):
            Limits(memory_mb=-5)

    def test_rlimit_style_limits_may_be_none_meaning_unlimited(self):
        """memory_mb, cpu_s and disk_mb may be None for no limit; timeout_s may not."""
        limits = Limits.from_mapping({"memory_mb": None, "cpu_s": None, "disk_mb": None})
        assert limits.memory_mb is None and limits.cpu_s is None and limits.disk_mb is None
        with pytest.raises(ValueError, match="timeout_s"):
            Limits(timeout_s=None)  # type: ignore[arg-type]

    def test_replace(self):
        """replace() returns Limits with the given change and refuses a name that is no limit."""
        limits = Limits().replace(timeout_s=2.5)
        assert limits.timeout_s == 2.5
        with pytest.raises(ValueError, match="nope"):
            Limits().replace(nope=1)


class TestOutcomeAndResult:
    def test_outcome_values_are_lowercase_strings(self):
        """Outcome values are the documented lowercase strings, in order, equal to those strings."""
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
            "disk_limit",
            "cancelled",
        ]
        assert Outcome("output_limit") is Outcome.OUTPUT_LIMIT
        assert Outcome.OK == "ok"

    def test_to_dict_is_json_serialisable(self):
        """to_dict() of a result holding tuples, bytes and sets can be dumped as JSON."""
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
        """A failed result has empty output, no signal or traceback, and no warnings by default."""
        result = SandboxResult(ok=False, value=None, outcome=Outcome.TIMEOUT, error="x")
        assert result.stdout == "" and result.stderr == ""
        assert result.signal is None and result.traceback is None
        assert result.warnings == []


# Names that leaked through the old deny list; each must stay out of plugin processes.
LEAKED_SECRETS = (
    "DB_PASS",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "PRIVATE_KEY_PEM",
    "APIKEY",
    "PASSPHRASE",
    "ACCESS_KEY_ID",
    "GH_PAT",
    "AUTH",
    "BEARER",
    "SESSION_COOKIE",
)


class TestEnvironmentAllowList:
    def test_default__passes_what_a_process_needs_and_nothing_else(self):
        """By default a plugin sees PATH, HOME, locale, proxies, CA bundles, Python's variables."""
        env = {
            "PATH": "/bin",
            "HOME": "/home/portal",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "https_proxy": "http://proxy:3128",
            "NO_PROXY": "localhost",
            "PYTHONHASHSEED": "0",
            "SSL_CERT_FILE": "/etc/ssl/certs/corp-ca.pem",
            "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/corp-ca.pem",
            "SOME_APP_SETTING": "x",
            "SECRET_KEY": "s",
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            **{name: "leak" for name in LEAKED_SECRETS},
        }
        assert scrub_environment(env, SandboxConfig()) == {
            "PATH": "/bin",
            "HOME": "/home/portal",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "https_proxy": "http://proxy:3128",
            "NO_PROXY": "localhost",
            "PYTHONHASHSEED": "0",
            "SSL_CERT_FILE": "/etc/ssl/certs/corp-ca.pem",
            "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/corp-ca.pem",
        }

    def test_declared_names__pass_unless_they_look_like_secrets(self):
        """A name a plugin declares passes; a secret-looking one does not, even when declared."""
        env = {"YOLO_REGION": "eu", "WEATHER_API_URL": "https://w.example", "OTHER": "x"}
        env.update({name: "leak" for name in LEAKED_SECRETS})
        declared = ("YOLO_REGION", "WEATHER_API_URL", *LEAKED_SECRETS)
        assert scrub_environment(env, SandboxConfig(), declared) == {
            "YOLO_REGION": "eu",
            "WEATHER_API_URL": "https://w.example",
        }

    def test_declared_url_with_a_password__withheld(self):
        """A declared variable whose value is a URL with a password is a secret too."""
        env = {"MODEL_STORE_URL": "https://ann:hunter2@store.example/models"}
        assert scrub_environment(env, SandboxConfig(), ("MODEL_STORE_URL",)) == {}

    def test_secret_looking_names__case_insensitive(self):
        """db_password and Api_Token look like secrets whatever their case."""
        verdicts = {
            name: env_verdict(name, "x", SandboxConfig(), (name,))
            for name in ("db_password", "Api_Token", "gh_pat", "region")
        }
        assert verdicts == {
            "db_password": EnvVerdict.SECRET,
            "Api_Token": EnvVerdict.SECRET,
            "gh_pat": EnvVerdict.SECRET,
            "region": EnvVerdict.PASSED,
        }

    def test_operator_allow__passes_names_and_patterns_even_secret_looking(self):
        """SANDBOX_ENV_ALLOW names or patterns pass, secret-looking or not."""
        config = SandboxConfig(env_allow=("AWS_REGION", "ACME_*"))
        env = {"AWS_REGION": "eu", "ACME_API_KEY": "k", "AWS_SECRET": "x"}
        assert scrub_environment(env, config) == {"AWS_REGION": "eu", "ACME_API_KEY": "k"}

    def test_operator_deny__wins_over_every_allowance(self):
        """SANDBOX_ENV_DENY removes a name that the defaults, the operator or a plugin allow."""
        config = SandboxConfig(env_allow=("ACME_*",), env_deny=("ACME_TOKEN", "TZ", "REGION"))
        env = {"ACME_TOKEN": "t", "ACME_HOST": "h", "TZ": "UTC", "REGION": "eu"}
        assert scrub_environment(env, config, ("REGION",)) == {"ACME_HOST": "h"}
        assert env_verdict("REGION", "eu", config, ("REGION",)) is EnvVerdict.DENIED

    def test_unlisted_name__has_its_own_verdict(self):
        """A name nobody allowed or declared is withheld as unlisted, not as a secret."""
        assert env_verdict("SOME_SETTING", "x", SandboxConfig()) is EnvVerdict.UNLISTED

    def test_secret_patterns__cover_every_leaked_name(self):
        """Each name the old deny list let through now looks like a secret."""
        for name in LEAKED_SECRETS:
            assert env_verdict(name, "x", SandboxConfig(), (name,)) is EnvVerdict.SECRET, name

    def test_from_env_reads_comma_separated_lists_and_flags(self):
        """SANDBOX_ENV_ALLOW and SANDBOX_ENV_DENY are comma-separated; the flags are read too."""
        config = SandboxConfig.from_env(
            {
                "SANDBOX_ENV_DENY": "FOO_*, BAR",
                "SANDBOX_ENV_ALLOW": "AWS_REGION",
                "SANDBOX_NO_NETWORK": "1",
                "SANDBOX_RUN_AS": "nobody",
            }
        )
        assert config.env_deny == ("FOO_*", "BAR")
        assert config.env_allow == ("AWS_REGION",)
        assert config.env_secret == DEFAULT_ENV_SECRET
        assert config.env_pass == DEFAULT_ENV_PASS
        assert config.no_network is True
        assert config.run_as == "nobody"

    def test_from_env_defaults_are_off(self):
        """Without settings: no isolation, no operator allow or deny list."""
        config = SandboxConfig.from_env({})
        assert config.no_network is False
        assert config.run_as is None
        assert (config.env_allow, config.env_deny) == ((), ())


class TestSandboxConfigSettings:
    def test_max_warm_hosts__defaults_to_16_and_reads_the_environment(self):
        """SANDBOX_MAX_WARM_HOSTS caps warm hosts; garbage or < 1 is refused by name."""
        assert SandboxConfig().max_warm_hosts == 16
        assert SandboxConfig.from_env({"SANDBOX_MAX_WARM_HOSTS": "3"}).max_warm_hosts == 3
        for bad in ("many", "0"):
            with pytest.raises(ValueError, match="SANDBOX_MAX_WARM_HOSTS"):
                SandboxConfig.from_env({"SANDBOX_MAX_WARM_HOSTS": bad})

    def test_from_env_rejects_garbage_flag(self):
        """SANDBOX_NO_NETWORK=maybe is refused with a message naming the variable."""
        with pytest.raises(ValueError, match="SANDBOX_NO_NETWORK"):
            SandboxConfig.from_env({"SANDBOX_NO_NETWORK": "maybe"})


class TestPreload:
    def test_is_hashable_value(self):
        """Preloads with the same target and args are equal and hash alike, lists or tuples."""
        assert Preload("a.b:c", [1, 2]) == Preload("a.b:c", (1, 2))
        assert len({Preload("a.b:c"), Preload("a.b:c", ())}) == 1

    def test_rejects_bad_target(self):
        """A Preload target that is not a 'module.path:attribute' string is refused."""
        with pytest.raises(ValueError, match=r"module\.path:attribute"):
            Preload("no_colon")
        with pytest.raises(TypeError):
            Preload(print)  # type: ignore[arg-type]

    def test_rejects_unhashable_args(self):
        """Preload args must be hashable: a list inside them is refused."""
        with pytest.raises(TypeError, match="hashable"):
            Preload("a:b", ([1],))

    def test_env__names_in_any_order_make_one_host_key(self):
        """Preload env names are a set: the same names in another order are the same host."""
        assert Preload("a:b", env=["B", "A", "B"]) == Preload("a:b", env=("A", "B"))
        assert Preload("a:b", env=("A",)) != Preload("a:b")
        assert Preload("a:b").env == ()

    @pytest.mark.parametrize("env", ["PATH", ("A=B",), ("",), (1,)], ids=repr)
    def test_env__rejects_what_is_not_a_list_of_names(self, env):
        """Preload env takes variable names, not a string, assignments or other values."""
        with pytest.raises((TypeError, ValueError), match="Preload env"):
            Preload("a:b", env=env)
