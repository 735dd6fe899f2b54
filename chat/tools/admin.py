"""Admin of the tools agents may call. Built-in rows come from the code
(``chat.tools.sync``) and MCP rows from their server's discovery: their link to what
runs them and their argument schema are shown, not edited. Workflow tools are added
here: a workflow (with a default model to run with) and a JSON schema of the
arguments, ``WORKFLOW_PARAMETERS`` when left empty, checked against JSON Schema's
meta-schema on save.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from modeltranslation.admin import TranslationAdmin

from .models import Tool, ToolKind
from .workflow_tool import WORKFLOW_PARAMETERS

if TYPE_CHECKING:  # django-stubs' names, for type checking only (a dev dependency)
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec

READ_ONLY_FOR_KIND = {ToolKind.BUILTIN: ("builtin",), ToolKind.MCP: ("server", "remote_name")}


class PrettyJSONField(forms.JSONField):
    """A JSON field shown indented, so a schema can be read and edited."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a JSON schema (Draft 2020-12's meta-schema), or None."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        return _("Not a valid JSON schema%(where)s: %(error)s") % {
            "where": f" ({where})" if where else "", "error": exc.message}
    return None


class ToolForm(forms.ModelForm):
    """A new tool is a workflow tool (built-ins and MCP tools have rows of their own)."""

    class Meta:
        model = Tool
        fields = ["name", "workflow", "description", "parameters", "enabled", "timeout_s",
                  "requires_approval", "public", "api_keys", "users", "groups", "workflows"]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.instance.kind = ToolKind.WORKFLOW

    def clean_parameters(self) -> Any:
        value = self.cleaned_data.get("parameters")
        if self.instance.kind == ToolKind.WORKFLOW and not value:
            return copy.deepcopy(WORKFLOW_PARAMETERS)
        problem = schema_problem(value) if isinstance(value, dict) else None
        if problem:
            raise ValidationError(problem)
        return value

    def clean_workflow(self) -> Any:
        workflow = self.cleaned_data.get("workflow")
        if workflow is not None and not workflow.default_model:
            raise ValidationError(_("“%(slug)s” has no default model, which a workflow tool "
                                    "runs with: set one on the workflow first.")
                                  % {"slug": workflow.slug})
        return workflow


@admin.register(Tool)
class ToolAdmin(TranslationAdmin):
    form = ToolForm
    list_display = ("name", "kind", "enabled", "requires_approval", "public", "timeout_s")
    list_filter = ("kind", "enabled", "requires_approval", "public", "server")
    search_fields = ("name", "description", "builtin", "remote_name")
    filter_horizontal = ("api_keys", "users", "groups", "workflows")
    readonly_fields = ("schema", "created_at", "updated_at")

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "parameters":
            kwargs["form_class"] = PrettyJSONField
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj: Tool | None = None):
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["kind", *READ_ONLY_FOR_KIND.get(ToolKind(obj.kind), ())]
        return fields

    def get_fieldsets(self, request, obj: Tool | None = None) -> _FieldsetSpec:
        return self._patch_fieldsets(self._fieldsets_for(obj))

    @staticmethod
    def _fieldsets_for(obj: Tool | None) -> list[tuple[Any, _FieldOpts]]:
        """What a tool of ``obj``'s kind shows: what runs it, then the same settings."""
        if obj is None:
            head: _FieldOpts = {"fields": ["name", "workflow", "description", "parameters",
                                               "enabled"],
                                    "description": _("Built-in tools come from the code and "
                                                     "MCP tools from their server: here you "
                                                     "add a workflow as a tool.")}
        elif obj.kind == ToolKind.WORKFLOW:
            head = {"fields": ["name", "kind", "workflow", "description", "parameters",
                               "enabled"]}
        else:
            runs = ["builtin"] if obj.kind == ToolKind.BUILTIN else ["server", "remote_name"]
            head = {"fields": ["name", "kind", *runs, "description", "schema", "enabled"]}
        fieldsets: list[tuple[Any, _FieldOpts]] = [
            (None, head),
            (_("Calls"), {"fields": ["timeout_s", "requires_approval", "public"]}),
            (_("Who may use it"), {
                "fields": ["api_keys", "users", "groups", "workflows"],
                "description": _("Empty lists: every user and key, in any workflow.")})]
        if obj is not None:
            fieldsets.append((_("Times"), {"fields": ["created_at", "updated_at"]}))
        return fieldsets

    @admin.display(description=_("parameters"))
    def schema(self, obj: Tool) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.parameters, indent=2,
                                                        ensure_ascii=False))
