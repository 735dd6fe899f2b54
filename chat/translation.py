"""Translated display texts of the chat app (django-modeltranslation)."""

from modeltranslation.translator import TranslationOptions, register

from .models import Tool, Workflow


@register(Workflow)
class WorkflowTranslation(TranslationOptions):
    fields = ("name", "description")


@register(Tool)
class ToolTranslation(TranslationOptions):
    fields = ("description",)
