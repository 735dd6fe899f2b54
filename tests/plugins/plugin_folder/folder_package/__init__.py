"""A plugin-folder package: its plugin imports a sibling module relatively."""

from plugins.base import PluginBase, PluginResponse

from .suffix import SUFFIX


class SignaturePlugin(PluginBase):
    name = "folder_signature"
    version = "1.0"

    def post_process(self, response: PluginResponse) -> PluginResponse:
        response.content += SUFFIX
        return response
