"""A plugin from the plugin folder: upper-cases the user's messages."""

from plugins.base import PluginBase, PluginRequest, map_message_text


class ShoutPlugin(PluginBase):
    name = "folder_shout"
    version = "1.0"
    description = "Upper-cases user messages (tests)."

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        for message in request.messages:
            if message["role"] == "user":
                map_message_text(message, str.upper)
        return request
