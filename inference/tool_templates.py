"""Prompts with tools for local models, rendered by the model's Hugging Face tokenizer.

A model whose own chat template knows tools (it mentions ``tools``: Qwen 2.5,
Llama 3.1, Hermes 2 Pro, Mistral…) renders them itself. For one whose template
does not, the endpoint's ``tool_format`` picks one of the two templates here,
written for OpenClaw after the public formats (not copied from any model):

    hermes        ChatML turns; a system turn lists the tools as JSON inside
                  <tools></tools> and asks for <tool_call>{"name", "arguments"}</tool_call>;
                  tool results come back as <tool_response>…</tool_response> in a user turn
    llama3_json   Llama 3 headers; the system turn lists the tools and asks for a bare
                  {"name", "parameters"} object; tool results come back as role ``ipython``

``inference.tool_parsing`` reads the calls back out of the answer with the
parser of the same name.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils.translation import gettext as _

from .errors import BadRequest

# Whitespace is written out as string literals ("\n"), every tag trimmed ({%- -%}),
# so the prompt is exactly what the strings say.
_SYSTEM_AND_TURNS = r"""
{%- if messages and messages[0].role in ["system", "developer"] -%}
  {%- set system = messages[0].content -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system = none -%}
  {%- set turns = messages -%}
{%- endif -%}
"""

HERMES_TEMPLATE = _SYSTEM_AND_TURNS + r"""
{%- if tools -%}
  {{- '<|im_start|>system\n' -}}
  {%- if system -%}{{- system + '\n\n' -}}{%- endif -%}
  {{- 'You can call functions to answer. They are described in JSON Schema inside '
      '<tools></tools>:\n<tools>\n' -}}
  {%- for tool in tools -%}
    {{- (tool.function if tool.function is defined else tool) | tojson -}}{{- '\n' -}}
  {%- endfor -%}
  {{- '</tools>\n\nTo call one, answer with its name and its arguments as a JSON object '
      'inside <tool_call></tool_call> tags, one block for each call:\n<tool_call>\n'
      '{"name": "<function name>", "arguments": {"<argument>": <value>}}\n'
      '</tool_call><|im_end|>\n' -}}
{%- elif system is not none -%}
  {{- '<|im_start|>system\n' + system + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in turns -%}
  {%- if message.role == 'tool' -%}
    {%- if loop.first or loop.previtem.role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' -}}
    {%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}
  {%- elif message.role == 'assistant' -%}
    {{- '<|im_start|>assistant' -}}
    {%- if message.content -%}{{- '\n' + message.content -}}{%- endif -%}
    {%- for call in message.tool_calls or [] -%}
      {{- '\n<tool_call>\n' -}}
      {{- {'name': call.function.name, 'arguments': call.function.arguments} | tojson -}}
      {{- '\n</tool_call>' -}}
    {%- endfor -%}
    {{- '<|im_end|>\n' -}}
  {%- else -%}
    {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

LLAMA3_JSON_TEMPLATE = _SYSTEM_AND_TURNS + r"""
{%- if bos_token -%}{{- bos_token -}}{%- endif -%}
{%- if tools or system is not none -%}
  {{- '<|start_header_id|>system<|end_header_id|>\n\n' -}}
  {%- if tools -%}
    {{- 'When a function helps to answer, answer with nothing but a JSON object '
        '{"name": <function name>, "parameters": {<argument name>: <value>}}. '
        'Use values from the conversation; do not make up variables.\n\n'
        'The functions you can call:\n\n' -}}
    {%- for tool in tools -%}
      {{- (tool.function if tool.function is defined else tool) | tojson(indent=4) -}}
      {{- '\n\n' -}}
    {%- endfor -%}
  {%- endif -%}
  {%- if system -%}{{- system -}}{%- endif -%}
  {{- '<|eot_id|>' -}}
{%- endif -%}
{%- for message in turns -%}
  {%- if message.role == 'tool' -%}
    {{- '<|start_header_id|>ipython<|end_header_id|>\n\n' + message.content + '<|eot_id|>' -}}
  {%- elif message.role == 'assistant' and message.tool_calls -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
    {%- for call in message.tool_calls -%}
      {%- if not loop.first -%}{{- '; ' -}}{%- endif -%}
      {{- {'name': call.function.name, 'parameters': call.function.arguments} | tojson -}}
    {%- endfor -%}
    {{- '<|eot_id|>' -}}
  {%- else -%}
    {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\n\n' + message.content -}}
    {{- '<|eot_id|>' -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
"""

TEMPLATES = {"hermes": HERMES_TEMPLATE, "llama3_json": LLAMA3_JSON_TEMPLATE}


def uses_tool_template(tool_format: str, messages: list[dict[str, Any]],
                       tools: list[dict[str, Any]] | None) -> bool:
    """Whether to render with tools: the endpoint has a tool format, and the request
    has tools in play or its conversation has tool calls or results to show."""
    if tool_format not in TEMPLATES:
        return False
    return bool(tools) or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages)


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages as chat templates take them: content as text (parts joined),
    assistant tool calls with their arguments as objects rather than JSON strings."""
    turns = []
    for message in messages:
        turn = {**message, "content": _text(message.get("content"))}
        if message.get("tool_calls"):
            turn["tool_calls"] = [_template_call(call) for call in message["tool_calls"]]
        turns.append(turn)
    return turns


def tool_prompt_text(tokenizer: Any, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]] | None, tool_format: str) -> str:
    """The prompt as text (TensorRT-LLM tokenizes it itself)."""
    return str(_render(tokenizer, messages, tools, tool_format, tokenize=False))


def tool_prompt_ids(tokenizer: Any, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None, tool_format: str) -> list[int]:
    """The prompt's token ids."""
    ids = _render(tokenizer, messages, tools, tool_format, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def own_template_knows_tools(tokenizer: Any) -> bool:
    """Whether the model's own chat template renders tools (it mentions them)."""
    # TensorRT-LLM's tokenizer wraps the Hugging Face one as ``.tokenizer``.
    template = getattr(tokenizer, "chat_template", None) or getattr(
        getattr(tokenizer, "tokenizer", None), "chat_template", None)
    if isinstance(template, dict):  # named templates: a "tool_use" one is picked for tools
        return "tool_use" in template or any("tools" in str(t) for t in template.values())
    return isinstance(template, str) and "tools" in template


def _render(tokenizer: Any, messages: list[dict[str, Any]],
            tools: list[dict[str, Any]] | None, tool_format: str, *, tokenize: bool) -> Any:
    options: dict[str, Any] = {"tools": tools or None, "add_generation_prompt": True,
                               "tokenize": tokenize}
    if not own_template_knows_tools(tokenizer):
        options["chat_template"] = TEMPLATES[tool_format]
    try:
        return tokenizer.apply_chat_template(template_messages(messages), **options)
    except Exception as exc:  # jinja errors: roles or shapes the template refuses
        raise BadRequest(_("the chat template rejected the messages: %(error)s")
                         % {"error": exc}) from None


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _template_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict):
        function = {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass  # shown as the model wrote it
    return {"id": call.get("id", ""), "type": "function",
            "function": {"name": function.get("name", ""), "arguments": arguments or {}}}
