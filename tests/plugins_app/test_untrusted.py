"""The boundary for plugin output: values made storable and terminal-safe, changes named."""

from __future__ import annotations

import json
import re

import pytest

from plugins_app import untrusted
from plugins_app.untrusted import Cleaned, MalformedReport

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
CHARS = {"version": 100, "error_type": 200}


def report(**changes) -> dict:
    """A load report as the plugin host writes it for a healthy plugin, with changes."""
    base = {
        "status": "ok",
        "stage": "setup",
        "name": "ocr",
        "version": "1.0",
        "description": "Reads text.",
        "requires": {"modules": ["json"]},
        "limits": {"timeout_s": 5},
        "has_setup": False,
        "missing": [],
        "error_type": None,
        "message": None,
        "where": None,
        "traceback": None,
        "field": None,
    }
    return {**base, **changes}


def checked(value: dict) -> untrusted.LoaderReport:
    return untrusted.load_report(value, is_name=NAME.fullmatch, max_chars=CHARS)


class TestLine:
    def test_plain_text__unchanged(self):
        """Ordinary text passes as it is, with no change noted."""
        assert untrusted.line("Plugin 'ocr' raised ValueError") == Cleaned(
            "Plugin 'ocr' raised ValueError", ()
        )

    def test_nul_surrogate_and_escape__replaced_and_counted(self):
        """NULs, lone surrogates and terminal escapes become U+FFFD, each kind counted."""
        assert untrusted.line("a\x00b\udcffc\x1b[2Jd\x00") == Cleaned(
            "a\ufffdb\ufffdc\ufffd[2Jd\ufffd",
            ("2 NUL characters, 1 lone surrogate and 1 control character replaced with U+FFFD",),
        )

    def test_line_breaks_and_tabs__become_spaces_silently(self):
        """A reason stays on one line: CR, LF, tabs and line separators become spaces."""
        assert untrusted.line("one\r\ntwo\tthree\u2028four") == Cleaned("one  two three four", ())

    def test_bidirectional_override__replaced(self):
        """Right-to-left overrides, which reorder what a terminal shows, are replaced."""
        assert untrusted.line("evil\u202etxt.exe").value == "evil\ufffdtxt.exe"

    def test_surrogate_pair__joined_not_replaced(self):
        """Two surrogates that form a pair become the character they encode."""
        assert untrusted.line("\ud83d\ude00") == Cleaned("\U0001f600", ())

    def test_over_limit__cut_keeping_start_with_ellipsis(self):
        """Text over the limit keeps its start and ends with an ellipsis, saying so."""
        assert untrusted.line("E" * 300, limit=200) == Cleaned(
            "E" * 199 + "…", ("cut from 300 to 200 characters",)
        )

    def test_not_text__stored_as_repr_saying_so(self):
        """A value that is not text is shown as its repr; None is empty."""
        assert untrusted.line(42) == Cleaned("42", ("an int, not text, stored as its repr",))
        assert untrusted.line(None) == Cleaned("", ())


class TestBlock:
    def test_newlines_and_tabs_kept__other_controls_replaced(self):
        """A traceback keeps its lines; CRLF becomes LF; NUL and ESC become U+FFFD."""
        assert untrusted.block("line 1\r\n\tline 2\x00\x1b[0m\n") == Cleaned(
            "line 1\n\tline 2\ufffd\ufffd[0m\n",
            ("1 NUL character and 1 control character replaced with U+FFFD",),
        )

    def test_over_limit_keeping_end__ellipsis_first(self):
        """With keep='end' the last characters stay, after an ellipsis."""
        assert untrusted.block("abcdef", limit=4, keep="end") == Cleaned(
            "…def", ("cut from 6 to 4 characters",)
        )


class TestData:
    def test_nested_strings_and_keys__cleaned_at_any_depth(self):
        """NULs and lone surrogates in keys and values, however deep, become U+FFFD."""
        value = {"k\x00": [{"deep": ("x\udcff", 1, 2.5, None, True)}], 3: "fine"}
        assert untrusted.data(value) == Cleaned(
            {"k\ufffd": [{"deep": ["x\ufffd", 1, 2.5, None, True]}], 3: "fine"},
            ("1 NUL character and 1 lone surrogate replaced with U+FFFD",),
        )

    def test_control_characters_in_data__kept(self):
        """Data keeps its own newlines and escapes: only what cannot be stored changes."""
        assert untrusted.data({"text": "a\nb\x1b"}) == Cleaned({"text": "a\nb\x1b"}, ())

    def test_other_types__left_for_the_json_encoder(self):
        """A set is not cleaned here: the JSON encoder refuses it with its own words."""
        value = untrusted.data({"s": {1, 2}}).value
        assert value == {"s": {1, 2}}
        with pytest.raises(TypeError, match="set is not JSON serializable"):
            json.dumps(value)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [({"a": "plain", "b": [1, "é"]}, False), ("a\x00b", True), ("\udcff", True)],
    )
    def test_has_unstorable__on_json_text(self, value, expected):
        """The fast check on encoded JSON finds NULs and surrogates and passes plain data."""
        assert untrusted.has_unstorable(json.dumps(value)) is expected

    def test_too_deep__value_error(self):
        """Data nested deeper than MAX_DEPTH is refused before any encoder recurses into it."""
        deep: list = []
        for _ in range(untrusted.MAX_DEPTH + 1):
            deep = [deep]
        with pytest.raises(ValueError, match=f"nests deeper than {untrusted.MAX_DEPTH} levels"):
            untrusted.data(deep)


class TestNumbers:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (7, Cleaned(7)),
            (None, Cleaned(None)),
            ("7", Cleaned(None, ("a str, not an integer, left empty",))),
            (True, Cleaned(None, ("a bool, not an integer, left empty",))),
            (
                2**70,
                Cleaned(
                    None,
                    ("1180591620717411303424 is outside 0 to 9223372036854775807, left empty",),
                ),
            ),
        ],
    )
    def test_integer__in_range_or_none_with_note(self, value, expected):
        """An integer out of range or of the wrong type becomes None, saying why."""
        assert untrusted.integer(value, low=0, high=2**63 - 1) == expected

    @pytest.mark.parametrize(
        ("value", "stored"),
        [(12.5, 12.5), (3, 3.0), (float("nan"), None), (10**400, None), (-1.0, None), ("1", None)],
    )
    def test_number__finite_in_range_or_none(self, value, stored):
        """A duration must be a finite, non-negative number; anything else is None."""
        cleaned = untrusted.number(value, low=0.0, high=1e15)
        assert cleaned.value == stored
        assert bool(cleaned.changes) == (stored is None)


class TestLoadReport:
    def test_host_report__checked_and_kept(self):
        """A report as the plugin host writes it passes with nothing changed."""
        checked_report = checked(report())
        assert (checked_report.status, checked_report.name, checked_report.version) == (
            "ok",
            "ocr",
            "1.0",
        )
        assert checked_report.requires == {"modules": ["json"]}
        assert checked_report.changes == ()

    def test_run_params_and_schema__kept(self):
        """run()'s signature and the declared params_schema come through as the host sent them."""
        signature = {"accepted": ["name"], "required": [], "var_keyword": False}
        checked_report = checked(report(run_params=signature, params_schema={"type": "object"}))
        assert (checked_report.run_params, checked_report.params_schema) == (
            signature,
            {"type": "object"},
        )

    def test_retry_and_quarantine_after__kept_with_defaults(self):
        """A declared retry comes through with every key; quarantine_after as declared."""
        checked_report = checked(report(retry={"max_attempts": 2}, quarantine_after=0))
        assert checked_report.retry == {
            "max_attempts": 2,
            "backoff_s": 5.0,
            "max_backoff_s": 600.0,
            "on_error": False,
        }
        assert checked_report.quarantine_after == 0
        assert (checked(report()).retry, checked(report()).quarantine_after) == (None, None)

    def test_bad_characters_and_lengths__cleaned_with_changes_named(self):
        """A NUL in the docstring and an over-long version are cleaned, each change named."""
        checked_report = checked(report(description="Reads\x00 text.", version="v" * 150))
        assert checked_report.description == "Reads\ufffd text."
        assert checked_report.version == "v" * 99 + "…"
        assert checked_report.changes == (
            "version: cut from 150 to 100 characters",
            "description: 1 NUL character replaced with U+FFFD",
        )

    def test_missing_items__cleaned(self):
        """What an unavailable plugin lacks comes through, its words terminal-safe."""
        checked_report = checked(
            report(
                status="unavailable",
                stage="requires",
                missing=[{"kind": "module", "item": "cv2\x1b[31m"}],
            )
        )
        assert checked_report.missing == (untrusted.MissingItem("module", "cv2\ufffd[31m"),)

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            (["a", "list"], "it is a list, not a dict"),
            ({"status": "ok"}, "keys description, error_type, limits, message, missing, name"),
            (
                {k: v for k, v in report().items() if k != "stage"},
                "key 'stage' is missing",
            ),
            (report(status="fine"), "'status' is 'fine', not one of ok, unavailable, failed"),
            (report(stage="import"), "'stage' is 'import' for a plugin that loaded"),
            (report(name=5), "'name' is an int, not text"),
            (report(name="a/b"), "'name' is 'a/b', not a plugin name"),
            (report(version=2**70), "'version' is an int, not text"),
            (report(requires=["json"]), "'requires' is a list, not a dict"),
            (report(limits={1: 2}), "'limits' has a key that is not text"),
            (report(limits={"timeout_s": float("nan")}), "'limits' is not JSON data"),
            (report(missing="cv2"), "'missing' is a str, not a list"),
            (
                report(status="unavailable", stage="requires"),
                "'missing' lists nothing missing for an unavailable plugin",
            ),
            (
                report(status="unavailable", stage="requires", missing=[{"kind": "disk"}]),
                "'missing' item 1 has kind 'disk', not one of module, library",
            ),
            (
                report(status="unavailable", stage="requires", missing=[{"kind": "env"}]),
                "'missing' item 1 has no 'item'",
            ),
            (
                report(status="failed", stage="setup", message=["no"]),
                "'message' is a list, not text",
            ),
            (report(run_params=["name"]), "'run_params' is not {accepted, required, var_keyword}"),
            (
                report(run_params={"accepted": ["a b"], "required": [], "var_keyword": False}),
                "'run_params' lists something that is not a parameter name",
            ),
            (
                report(run_params={"accepted": [], "required": [], "var_keyword": "yes"}),
                "'run_params' has a 'var_keyword' that is not true or false",
            ),
            (report(params_schema=["count"]), "'params_schema' is a list, not a dict"),
            (report(retry={"max_attempts": 0}), "'retry' is not a retry policy: retry['max_"),
            (report(retry="always"), "'retry' is not a retry policy: retry must be a dict"),
            (report(quarantine_after=-1), "'quarantine_after' is not a whole number"),
        ],
    )
    def test_malformed__refused_saying_what_is_wrong(self, value, problem):
        """A report with missing keys or wrong types is refused, naming the problem."""
        with pytest.raises(MalformedReport) as refused:
            checked(value)
        assert str(refused.value).startswith(problem)
