"""Read-only admins for sagas, dead letters and pending messages — in every tenant database.

ecotone_django's rows live in each tenant's database, which Django's admin does
not know about: :class:`DatabaseChooserMixin` reads from the alias named by the
``?db=`` query parameter (one of ``get_config().database_aliases``, the first by
default), offers every alias in a "database" list filter, and keeps the choice
for detail pages and actions through the admin's preserved filters.

Who sees which database: a superuser every one; anyone else only the aliases that
``ECOTONE["ADMIN_DATABASES"]`` (a dotted path to ``callable(request) -> iterable of
aliases``) returns for the request, and none without it. Deleting a dead letter needs
the ``delete_deadletter`` permission, replaying one ``replay_deadletter``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.urls import reverse
from django.utils.dateformat import format as date_format
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.module_loading import import_string
from django.utils.safestring import SafeString
from django.utils.timezone import localtime

from .clock import now
from .conf import get_config
from .models import DeadLetter, OutboxMessage, SagaState, TaskRun
from .replay import replay_many

if TYPE_CHECKING:
    from django.contrib.admin.views.main import ChangeList

    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = object

DB_PARAM = "db"
CHANGELIST_FILTERS = "_changelist_filters"


def allowed_databases(request: HttpRequest) -> list[str]:
    """The tenant databases ``request.user`` may browse: every one for a superuser, else what the
    ``ECOTONE["ADMIN_DATABASES"]`` hook returns (in settings order), else none."""
    config = get_config()
    aliases = list(config.database_aliases)
    if getattr(request.user, "is_superuser", False):
        return aliases
    if config.admin_databases is None:
        return []
    allowed = set(import_string(config.admin_databases)(request))
    return [alias for alias in aliases if alias in allowed]


def chosen_database(request: HttpRequest) -> str:
    """The alias named by ``?db=`` (also inside preserved changelist filters); the first allowed one by default.

    An alias that is not a tenant database is a 404; one the user may not browse (see
    :func:`allowed_databases`) is a 403.
    """
    aliases = get_config().database_aliases
    allowed = allowed_databases(request)
    alias = request.GET.get(DB_PARAM)
    if alias is None:
        alias = QueryDict(request.GET.get(CHANGELIST_FILTERS, "")).get(DB_PARAM)
    if alias is None:
        if not allowed:
            raise PermissionDenied("No tenant database is open to this user (see ECOTONE['ADMIN_DATABASES']).")
        return allowed[0]
    if alias not in aliases:
        raise Http404(f"Unknown database {alias!r}; the tenant databases are {', '.join(aliases)}.")
    if alias not in allowed:
        raise PermissionDenied(f"The database {alias!r} is not open to this user.")
    return alias


def _pre(text: str) -> SafeString:
    return format_html("<pre>{}</pre>", text)


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
    except ValueError:
        return text


class DatabaseFilter(admin.SimpleListFilter):
    """Every tenant database as a choice; exactly one is always selected (a queryset spans one database)."""

    title = "database"
    parameter_name = DB_PARAM

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(alias, alias) for alias in allowed_databases(request)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset  # DatabaseChooserMixin.get_queryset already reads from the chosen database

    def choices(self, changelist: ChangeList) -> Any:
        current = chosen_database(self.request)
        for alias, title in self.lookup_choices:
            yield {
                "selected": alias == current,
                "query_string": changelist.get_query_string({DB_PARAM: alias}),
                "display": title,
            }


class DatabaseChooserMixin(_ModelAdmin):
    """Read and act on the tenant database chosen with ``?db=`` (put :class:`DatabaseFilter` in list_filter)."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(chosen_database(request))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The model permission, and at least one tenant database open to the user."""
        return super().has_view_permission(request, obj) and bool(allowed_databases(request))

    def get_preserved_filters(self, request: HttpRequest) -> str:
        preserved = super().get_preserved_filters(request)
        match = request.resolver_match
        changelist = f"{self.opts.app_label}_{self.opts.model_name}_changelist"
        on_changelist = match is not None and match.url_name == changelist
        if on_changelist or DB_PARAM not in request.GET:
            return preserved
        # A detail page opened with ?db=… (not from the changelist): carry the choice to the links it renders.
        filters = QueryDict(request.GET.get(CHANGELIST_FILTERS, ""), mutable=True)
        filters[DB_PARAM] = chosen_database(request)
        return urlencode({CHANGELIST_FILTERS: filters.urlencode()})

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"subtitle": f"Database: {chosen_database(request)}", **(extra_context or {})}
        return super().changelist_view(request, context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Model | None = None,
    ) -> HttpResponse:
        context["subtitle"] = f"{context.get('subtitle') or ''} (database: {chosen_database(request)})".strip()
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description="tenant database")
    def tenant_database(self, obj: Model) -> str:
        return obj._state.db or ""


class ReadOnlyMixin(_ModelAdmin):
    """Nothing is added or edited here; the change form is a read-only view. ``deletable`` allows deleting."""

    deletable = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.deletable and super().has_delete_permission(request, obj)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: int) -> HttpResponse:
        # Django returns to the changelist only with change permission; view permission suffices here.
        response = super().response_delete(request, obj_display, obj_id)
        if not isinstance(response, HttpResponseRedirect) or not self.has_view_permission(request):
            return response
        changelist = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        context: dict[str, Any] = {"preserved_filters": self.get_preserved_filters(request), "opts": self.opts}
        return HttpResponseRedirect(add_preserved_filters(context, changelist))


@admin.register(SagaState)
class SagaStateAdmin(DatabaseChooserMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ["saga_type", "saga_id", "tenant_database", "tenant", "status", "version", "updated_at"]
    list_filter = [DatabaseFilter, "saga_type", "status"]
    search_fields = ["saga_id"]
    ordering = ["-updated_at", "-id"]
    fields = [
        "saga_type",
        "saga_id",
        "tenant_database",
        "tenant",
        "status",
        "version",
        "created_at",
        "updated_at",
        "state_display",
        "history_display",
    ]
    readonly_fields = ["tenant_database", "state_display", "history_display"]

    @admin.display(description="state")
    def state_display(self, obj: SagaState) -> SafeString:
        return _pre(obj.state_pretty)

    @admin.display(description="handled messages")
    def history_display(self, obj: SagaState) -> SafeString | str:
        rows = obj.history.all()  # the related manager reads from the saga's own database
        if not rows:
            return "-"
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (date_format(localtime(row.handled_at), "Y-m-d H:i:s"), row.message_type, row.handler, row.message_id)
                for row in rows
            ),
        )
        return format_html(
            "<table><thead><tr><th>time</th><th>message type</th><th>handler</th><th>message id</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            body,
        )


@admin.register(DeadLetter)
class DeadLetterAdmin(DatabaseChooserMixin, ReadOnlyMixin, admin.ModelAdmin):
    deletable = True
    list_display = ["id", "failed_at", "message_type", "handler", "tenant_database", "tenant", "reason", "attempts"]
    list_display_links = ["id", "failed_at"]
    list_filter = [DatabaseFilter, "handler"]
    search_fields = ["message_id", "message_type", "handler", "reason"]
    actions = ["replay_selected"]
    fields = [
        "tenant_database",
        "message_id",
        "message_type",
        "handler",
        "channel",
        "tenant",
        "attempts",
        "failed_at",
        "reason",
        "exception",
        "traceback_display",
        "envelope_display",
    ]
    readonly_fields = ["tenant_database", "exception", "traceback_display", "envelope_display"]

    @admin.display(description="exception")
    def exception(self, obj: DeadLetter) -> str:
        return f"{obj.exception_type}: {obj.exception_message}" if obj.exception_type else "-"

    @admin.display(description="traceback")
    def traceback_display(self, obj: DeadLetter) -> SafeString | str:
        return _pre(obj.traceback) if obj.traceback else "-"

    @admin.display(description="envelope")
    def envelope_display(self, obj: DeadLetter) -> SafeString:
        return _pre(obj.envelope_pretty)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        """The ``replay_deadletter`` model permission."""
        return request.user.has_perm(f"{self.opts.app_label}.replay_{self.opts.model_name}")

    @admin.action(description="Replay selected dead letters", permissions=["replay"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        alias = queryset.db
        replayed, errors = replay_many(queryset, alias)
        if replayed:
            self.message_user(request, f"Replayed {replayed} dead letter(s) in database {alias}.", messages.SUCCESS)
        for error in errors:
            self.message_user(request, str(error), messages.ERROR)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(DatabaseChooserMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "channel",
        "message_type",
        "handler",
        "tenant_database",
        "tenant",
        "available_at",
        "is_due",
        "attempts",
        "last_error",
    ]
    list_filter = [DatabaseFilter, "channel"]
    search_fields = ["message_id", "message_type", "handler"]
    ordering = ["available_at", "id"]
    fields = [
        "tenant_database",
        "message_id",
        "channel",
        "message_type",
        "handler",
        "tenant",
        "available_at",
        "attempts",
        "created_at",
        "last_error",
        "envelope_display",
    ]
    readonly_fields = ["tenant_database", "envelope_display"]

    @admin.display(description="due", boolean=True)
    def is_due(self, obj: OutboxMessage) -> bool:
        return obj.available_at <= now()

    @admin.display(description="envelope")
    def envelope_display(self, obj: OutboxMessage) -> SafeString:
        return _pre(_pretty_json(obj.body))


@admin.register(TaskRun)
class TaskRunAdmin(DatabaseChooserMixin, ReadOnlyMixin, admin.ModelAdmin):
    """``django.tasks`` results of the OutboxBackend, per tenant database."""

    deletable = True
    list_display = ["id", "task_path", "status", "tenant_database", "tenant", "queue_name", "attempts", "enqueued_at"]
    list_filter = [DatabaseFilter, "status", "task_path"]
    search_fields = ["id", "task_path"]
    fields = [
        "tenant_database",
        "id",
        "task_path",
        "status",
        "backend",
        "queue_name",
        "priority",
        "tenant",
        "enqueued_at",
        "run_after",
        "started_at",
        "last_attempted_at",
        "finished_at",
        "worker_ids",
        "arguments_display",
        "return_value_display",
        "errors_display",
    ]
    readonly_fields = ["tenant_database", "arguments_display", "return_value_display", "errors_display"]

    @admin.display(description="arguments")
    def arguments_display(self, obj: TaskRun) -> SafeString:
        return _pre(json.dumps({"args": obj.args, "kwargs": obj.kwargs}, indent=2, ensure_ascii=False))

    @admin.display(description="return value")
    def return_value_display(self, obj: TaskRun) -> SafeString | str:
        return (
            _pre(json.dumps(obj.return_value, indent=2, ensure_ascii=False))
            if obj.status == TaskRun.SUCCESSFUL
            else "-"
        )

    @admin.display(description="errors")
    def errors_display(self, obj: TaskRun) -> SafeString | str:
        return _pre("\n".join(error.get("traceback", "") for error in obj.errors)) if obj.errors else "-"
