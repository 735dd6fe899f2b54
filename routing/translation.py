"""Translated display texts (django-modeltranslation): one column per language."""

from modeltranslation.translator import TranslationOptions, register

from .models import ModelEndpoint, RoutingRule


@register(ModelEndpoint)
class ModelEndpointTranslation(TranslationOptions):
    fields = ("display_name", "description")


@register(RoutingRule)
class RoutingRuleTranslation(TranslationOptions):
    fields = ("name", "description")
