"""What keeps the history lists fast on a million rows: capped counts, text-box filters, and a
read-only base that searches once (the figures are in docs/admin.md)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Prefetch, QuerySet
from django.utils.functional import cached_property

from plugins_app.admin.display import ADMIN_CSS
from plugins_app.models import Plugin


class CappedCountPaginator(Paginator):
    """Counts at most `cap` matching rows, so no page runs a COUNT(*) over a million rows.

    Beyond the cap the list says "more than N" and pages up to the cap; narrowing with the
    filters, the search or the date bar brings older rows into reach.
    """

    object_list: QuerySet[Any]  # the admin always pages a queryset
    cap = 1_000
    capped = False
    search_capped = False  # set by the admin when a text search kept only its newest matches

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by().values("pk")[: self.cap + 1].count()
        self.capped = counted > self.cap or self.search_capped
        return min(counted, self.cap)


class InputFilter(admin.SimpleListFilter):
    """A sidebar text box instead of a link per value (one link per plugin would be 10,000)."""

    template = "admin/plugins_app/input_filter.html"
    placeholder = ""

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        kept = {k: v for k, v in changelist.params.items() if k != self.parameter_name}
        yield {
            "kept": sorted(kept.items()),
            "value": self.value() or "",
            "clear_link": changelist.get_query_string(remove=[self.parameter_name]),
            "placeholder": self.placeholder,
        }


class PluginNameFilter(InputFilter):
    title = "plugin"
    parameter_name = "plugin"
    placeholder = "exact plugin name"

    def queryset(self, request, queryset):
        name = self.value()
        return queryset.filter(plugin__name=name.strip()) if name else queryset


class LargeHistoryAdmin(admin.ModelAdmin):
    """Append-only history: no add, no edit, no delete, and cheap on a million rows.

    Plugin names come by prefetch, not list_select_related: with table statistics, SQLite
    plans the join as "every plugin, then its runs, then sort them all" (seconds on 1M rows).
    """

    actions: tuple[str, ...] | None = None
    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    change_list_template = "admin/plugins_app/history_change_list.html"
    # A text search keeps at most this many matches, the newest by `search_recency`.
    search_cap = 1000
    search_recency: tuple[str, ...] = ("-pk",)

    class Media:
        css = ADMIN_CSS

    def get_queryset(self, request):
        names = Prefetch("plugin", queryset=Plugin.objects.only("id", "name"))
        return super().get_queryset(request).prefetch_related(names)

    def get_search_results(self, request, queryset, search_term):
        """Search once, then let the count, the page and the date bar work on the matched ids.

        A text search cannot use an index: keeping the newest `search_cap` matches makes it one
        scan per page instead of one per query. Beyond them the list says "more than".
        """
        matches, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if not search_term.strip():
            return matches, may_have_duplicates
        newest = matches.order_by(*self.search_recency).values_list("pk", flat=True)
        ids = list(newest[: self.search_cap + 1])
        request.portal_search_capped = len(ids) > self.search_cap
        return queryset.filter(pk__in=ids[: self.search_cap]), False

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        paginator = super().get_paginator(
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        if isinstance(paginator, CappedCountPaginator):
            paginator.search_capped = getattr(request, "portal_search_capped", False)
        return paginator

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
