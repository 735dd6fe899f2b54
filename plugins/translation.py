"""Translated display texts (django-modeltranslation): one column per language."""

from modeltranslation.translator import TranslationOptions, register

from .models import Plugin


@register(Plugin)
class PluginTranslation(TranslationOptions):
    fields = ("description",)
