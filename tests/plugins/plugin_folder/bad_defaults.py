"""A plugin whose defaults do not fit its own config schema."""

from plugins.base import PluginBase


class BadDefaultsPlugin(PluginBase):
    name = "folder_bad_defaults"
    version = "1.0"
    config_schema = {"type": "object", "properties": {"limit": {"type": "integer"}}}
    defaults = {"limit": "ten"}
