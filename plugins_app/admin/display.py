"""How the operator admin shows things: state badges, shortened reasons, ages, links, the chart.

One place, so the templates (index overview, confirmation pages) and the ModelAdmins render a
state, a reason, a duration or a link to a run the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince

from plugins_app import storable
from plugins_app.models import PluginEvent, PluginRun
from plugins_app.selectors import HourBucket

SHORT_REASON_CHARS = 80
ADMIN_CSS = {"all": ("plugins_app/admin.css",)}


def fieldset_fields(fieldsets: Iterable[tuple[Any, Mapping[str, Any]]]) -> tuple[str, ...]:
    """Every field the fieldsets name, in order (a row of several counts each of them)."""
    return tuple(
        name
        for _, options in fieldsets
        for row in options["fields"]
        for name in ((row,) if isinstance(row, str) else row)
    )


def state_badge(state: str, label: str | None = None) -> SafeString:
    """A coloured pill; its colour is the `state-<STATE>` class of plugins_app/admin.css."""
    if not state:
        return format_html('<span class="state-badge state-none">{}</span>', "—")
    return format_html('<span class="state-badge state-{}">{}</span>', state, label or state)


def short_text(text: str, chars: int = SHORT_REASON_CHARS) -> SafeString | str:
    """The reason's start and its advice (`reason_summary`), with the full text on hover."""
    if not text:
        return "—"
    return format_html(
        '<span class="short-reason" title="{}">{}</span>', text, reason_summary(text, chars)
    )


def reason_summary(text: str, chars: int = SHORT_REASON_CHARS) -> str:
    """A long reason as its first `chars` characters, an ellipsis and its advice: the last
    parenthesised clause, or else what follows the last ';' (reasons end with what to do
    next, which a plain cut drops). Advice over ADVICE_CHARS is cut like the rest."""
    advice = _advice(text)
    if not advice or len(advice) > ADVICE_CHARS:
        return Truncator(text).chars(chars)
    head = text[: len(text) - len(advice)].rstrip(" ;")
    if len(head) <= chars:
        return text
    return f"{Truncator(head).chars(chars)} {advice}"


ADVICE_CHARS = 120  # of a reason's closing advice, kept whole in a shortened reason


def _advice(text: str) -> str:
    stripped = text.rstrip()
    if stripped.endswith(")"):
        depth = 0
        for index in range(len(stripped) - 1, 0, -1):
            depth += {")": 1, "(": -1}.get(stripped[index], 0)
            if depth == 0:
                return stripped[index:]
    head, semicolon, tail = stripped.rpartition(";")
    return tail.strip() if semicolon and head else ""


def preformatted(text: str) -> SafeString | str:
    """Long text kept as written (tracebacks, output tails, full reasons)."""
    if not text:
        return "—"
    return format_html('<pre class="forensics">{}</pre>', text)


def one_per_line(items: Iterable[str]) -> SafeString | str:
    """Each item on a line of its own (paths, which may hold any punctuation)."""
    lines = [(item,) for item in items]
    if not lines:
        return "—"
    return format_html_join(mark_safe("<br>"), "{}", lines)


def pretty_json(value: Any) -> SafeString | str:
    if value is None:
        return "—"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    if storable.text_problem(text):
        # A lone surrogate (stored by an older version) cannot be sent as UTF-8: show escapes.
        text = json.dumps(value, indent=2, sort_keys=True)
    return preformatted(text)


def human_duration(seconds: float | None) -> str:
    """'3d 4h', '2h 5m', '42s': the two largest units, enough to see at a glance."""
    if seconds is None:
        return "—"
    remaining = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, remaining = divmod(remaining, size)
        if amount or (unit == "s" and not parts):
            parts.append(f"{amount}{unit}")
    return " ".join(parts[:2])


def age(value: datetime | None, now: datetime | None = None) -> SafeString | str:
    """'5 minutes ago', with the exact time on hover."""
    if value is None:
        return "never"
    exact = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    now = now or timezone.now()
    seconds = (now - value).total_seconds()
    # timesince says "0 minutes" for the last minute, which is when an operator looks closest.
    whole = max(0, int(seconds))
    ago = (
        f"{whole} second{'' if whole == 1 else 's'}"
        if seconds < 60
        else timesince(value, now, depth=1)
    )
    return format_html(
        '<time datetime="{}" title="{}">{} ago</time>', value.isoformat(), exact, ago
    )


def timestamp(value: datetime | None) -> SafeString | str:
    """The exact local time, compact ('2026-12-07 06:27:51', which may wrap between the date
    and the time), with its age on hover."""
    if value is None:
        return "—"
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{} ago">{} {}</time>',
        value.isoformat(),
        timesince(value, depth=1),
        f"{local:%Y-%m-%d}",
        f"{local:%H:%M:%S}",
    )


def plugin_link(plugin_id: int, name: str):
    url = reverse("admin:plugins_app_plugin_change", args=[plugin_id])
    return format_html('<a href="{}">{}</a>', url, name)


def run_link(run_id: int | None):
    if run_id is None:
        return "—"
    url = reverse("admin:plugins_app_pluginrun_change", args=[run_id])
    return format_html('<a href="{}">run #{}</a>', url, run_id)


def history_url(model_name: str, plugin_name: str) -> str:
    """The runs or events list narrowed to one plugin."""
    changelist = reverse(f"admin:plugins_app_{model_name}_changelist")
    return f"{changelist}?{urlencode({'plugin': plugin_name})}"


def event_transition(event: PluginEvent):
    if not event.to_state:
        return "—"
    return format_html("{} → {}", state_badge(event.from_state), state_badge(event.to_state))


class RunColumns:
    """A run's status badge and duration, the same on the plugin page and in the run list."""

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: PluginRun):
        return state_badge(f"run-{obj.status}", obj.get_status_display())

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj: PluginRun):
        return milliseconds(obj.duration_ms)


def milliseconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def kibibytes(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1024:.1f} MiB" if value >= 1024 else f"{value} KiB"


@dataclass(frozen=True)
class ChartBar:
    x: float
    width: float
    ok_y: float
    ok_height: float
    failed_y: float
    failed_height: float
    title: str
    label: str


@dataclass(frozen=True)
class HourlyChart:
    width: int
    height: int
    plot_height: int
    peak: int
    total: int
    failed: int
    bars: list[ChartBar]


def hourly_chart(buckets: list[HourBucket], *, width: int = 600, height: int = 150) -> HourlyChart:
    """Bar geometry for the runs-per-hour SVG: failures stacked on top of the other runs."""
    plot_height = height - 20  # room under the bars for the hour labels
    peak = max((bucket.total for bucket in buckets), default=0)
    slot = width / max(len(buckets), 1)
    bars = []
    for i, bucket in enumerate(buckets):
        scale = plot_height / peak if peak else 0.0
        failed_height = bucket.failed * scale
        ok_height = (bucket.total - bucket.failed) * scale
        local = timezone.localtime(bucket.start)
        bars.append(
            ChartBar(
                x=round(i * slot + 1, 1),
                width=round(slot - 2, 1),
                ok_y=round(plot_height - ok_height, 1),
                ok_height=round(ok_height, 1),
                failed_y=round(plot_height - ok_height - failed_height, 1),
                failed_height=round(failed_height, 1),
                title=(
                    f"{local:%Y-%m-%d %H}:00 to {local.hour + 1:02d}:00: "
                    f"{bucket.total} runs, {bucket.failed} failed"
                ),
                label=f"{local:%H}h" if i % 3 == 0 else "",
            )
        )
    return HourlyChart(
        width=width,
        height=height,
        plot_height=plot_height,
        peak=peak,
        total=sum(bucket.total for bucket in buckets),
        failed=sum(bucket.failed for bucket in buckets),
        bars=bars,
    )


def run_params(recorded: dict[str, Any] | None) -> str:
    """What run() takes, as the last load read its signature, in words."""
    if recorded is None:
        return "unknown until the plugin loads (params are then checked by the call)"
    accepted = ", ".join(recorded["accepted"]) or "no params"
    required = ", ".join(recorded["required"])
    words = accepted + (f" (required: {required})" if required else "")
    if recorded["var_keyword"]:
        words += "; any other name too (**params)"
    return words
