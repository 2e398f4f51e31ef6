"""What the audit reports: the rules, one violation, and the `# audit: allow` suppressions.

A line may carry a narrow, explained suppression: `# audit: allow PORTAL002 <why, in words>`.
It covers the statement or call it sits on, must give a why, and is itself reported when it
suppresses nothing, so stale suppressions cannot pile up.
"""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field

RULES = {
    "PORTAL000": "file cannot be parsed",
    "PORTAL001": "dynamic import of plugin code outside sandbox/",
    "PORTAL002": "direct call of a plugin's run/setup outside sandbox/",
    "PORTAL003": "registry state, counter or reason written outside plugins_app/services/",
    "PORTAL004": "hard-coded reason in plugins_app/ (build it in plugins_app/reasons.py)",
    "PORTAL005": "the admin, the API or a command imports sandbox/ (go through plugins_app)",
    "PORTAL006": "import cycle among the project's packages",
    "PORTAL009": "suppression comment without a why, naming no known rule, or suppressing nothing",
}

SUPPRESSION = re.compile(r"#\s*audit:\s*allow\b(?P<rest>.*)$")
SUPPRESSION_RULES = re.compile(r"\s*(?P<rules>[A-Z]+\d{3}(?:\s*,\s*[A-Z]+\d{3})*)(?P<why>.*)$")
MIN_WHY_WORDS = 3


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    rule: str
    message: str
    end_line: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule} {self.message}"


@dataclass
class Suppression:
    line: int
    rules: frozenset[str]
    why: str
    used: bool = False


def _suppressions(source: str) -> tuple[list[Suppression], list[tuple[int, str]]]:
    """Suppression comments, and (line, problem) for malformed ones."""
    found: list[Suppression] = []
    problems: list[tuple[int, str]] = []
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        match = SUPPRESSION.search(token.string)
        if not match:
            continue
        line = token.start[0]
        parsed = SUPPRESSION_RULES.match(match["rest"])
        if not parsed:
            problems.append((line, "suppression names no rule: use `# audit: allow RULE <why>`"))
            continue
        rules = frozenset(rule.strip() for rule in parsed["rules"].split(","))
        unknown = sorted(rules - RULES.keys())
        why = parsed["why"].strip(" :-—")
        if unknown:
            problems.append((line, f"suppression names unknown rule(s) {', '.join(unknown)}"))
        elif len(why.split()) < MIN_WHY_WORDS:
            problems.append(
                (line, f"suppression needs a why of at least {MIN_WHY_WORDS} words after the rule")
            )
        else:
            found.append(Suppression(line, rules, why))
    return found, problems


def apply_suppressions(path: str, source: str, violations: list[Violation]) -> list[Violation]:
    """The violations no suppression covers, plus one for each malformed or unused suppression."""
    suppressions, problems = _suppressions(source)
    kept: list[Violation] = []
    for violation in violations:
        span = range(violation.line, max(violation.end_line, violation.line) + 1)
        matching = [s for s in suppressions if s.line in span and violation.rule in s.rules]
        for suppression in matching:
            suppression.used = True
        if not matching:
            kept.append(violation)
    for line, problem in problems:
        kept.append(Violation(path, line, "PORTAL009", problem, line))
    for suppression in suppressions:
        if not suppression.used:
            rules = ", ".join(sorted(suppression.rules))
            kept.append(
                Violation(
                    path,
                    suppression.line,
                    "PORTAL009",
                    f"suppression of {rules} suppresses nothing here: remove it",
                    suppression.line,
                )
            )
    return kept
