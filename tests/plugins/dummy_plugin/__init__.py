"""A dummy plugin package, found through an ``openclaw.plugins`` entry point that the
tests declare in a ``*.dist-info`` folder on ``sys.path`` (as pip would install it)."""

from __future__ import annotations

from plugins.base import PluginBase, PluginRequest, PluginResponse


class TaggerPlugin(PluginBase):
    """Leaves a trace of each hook: the request's ``trail``, the answer's suffix and
    the streamed deltas' suffix show the order the chain ran the plugins in."""

    name = "dummy_tagger"
    version = "0.1"
    description = "Tags requests and answers (tests)."
    config_schema = {
        "type": "object",
        "properties": {"tag": {"type": "string", "minLength": 1, "maxLength": 10}},
        "required": ["tag"],
        "additionalProperties": False,
    }
    defaults = {"tag": "t"}

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        request.metadata.setdefault("trail", []).append(self.config["tag"])
        return request

    def post_process(self, response: PluginResponse) -> PluginResponse:
        response.content += f"<{self.config['tag']}>"
        return response

    def stream_delta(self, text: str, state: dict) -> str:
        return f"{text}<{self.config['tag']}>"


class RaisingPlugin(PluginBase):
    """Fails in every hook, as a buggy plugin would."""

    name = "dummy_raising"
    version = "0.1"

    def pre_process(self, request: PluginRequest) -> PluginRequest:
        raise RuntimeError("pre_process is broken")

    def post_process(self, response: PluginResponse) -> PluginResponse:
        raise RuntimeError("post_process is broken")

    def stream_delta(self, text: str, state: dict) -> str:
        raise RuntimeError("stream_delta is broken")


class NotAPlugin:
    """Declared as an entry point by mistake: not a PluginBase subclass."""

    name = "dummy_not_a_plugin"
