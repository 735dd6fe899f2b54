"""Export a Hugging Face causal LM folder to an ONNX folder the ``onnx`` engine runs.

``export_to_onnx(hf_folder, onnx_folder)`` writes ``model.onnx`` next to a copy
of the tokenizer (with its chat template), ``config.json`` and, when there is
one, ``generation_config.json``. Operators run it as::

    python -m inference.onnx_export SRC DST

The graph has a key/value cache, with the input and output names that
optimum's ``ORTModelForCausalLM`` exports use:

    inputs   input_ids, attention_mask, position_ids,
             past_key_values.{i}.key / .value   [batch, kv_heads, past, head_dim]
    outputs  logits, present.{i}.key / .value    [batch, kv_heads, past + seq, head_dim]

The first step passes an empty cache (``past`` = 0); ``with_cache=False``
(``--no-cache``) writes the plain graph, input_ids + attention_mask -> logits,
that the engine re-runs over the whole sequence at each step. It is made with torch's
TorchScript exporter (``dynamo=False``): the newer exporter needs
``onnxscript``, which the project does not install. The weights are exported in
float32 with eager attention, and the causal mask is built in the graph from
``attention_mask``, so the model must be a decoder with full causal attention
(Llama, Qwen2, Phi-3, Mistral within its sliding window, ...). Exporting needs
torch; running the result does not (onnxruntime, numpy and the tokenizer).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

logger = logging.getLogger(__name__)

OPSET = 17
MODEL_FILE = "model.onnx"
EXTRA_FILES = ("generation_config.json",)


def export_to_onnx(hf_folder: Path | str, onnx_folder: Path | str, *,
                   with_cache: bool = True) -> Path:
    """Write ``model.onnx``, the tokenizer and ``config.json`` of ``hf_folder`` to ``onnx_folder``.

    ``with_cache=False`` writes the plain graph (input_ids, attention_mask -> logits).
    """
    source, target = Path(hf_folder), Path(onnx_folder)
    target.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32,
                                                 attn_implementation="eager")
    model.eval()
    wrapper = _ExportWrapper(model, with_cache)
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated and the tracer warns about the
        # Python-side checks of transformers' cache; the graph is still right
        # (the engine's tests compare it with transformers' own generate).
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, wrapper.sample_inputs(), target / MODEL_FILE, dynamo=False,
                          opset_version=OPSET, input_names=wrapper.input_names(),
                          output_names=wrapper.output_names(), dynamic_axes=wrapper.axes())
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    model.config.save_pretrained(target)
    for name in EXTRA_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
    return target


class _ExportWrapper(torch.nn.Module):
    """Flat tensors in and out around a transformers causal LM, for the exporter."""

    def __init__(self, model, with_cache: bool):
        super().__init__()
        self.model = model
        self.layers = model.config.num_hidden_layers if with_cache else 0
        self.past = [f"past_key_values.{i}.{part}" for i in range(self.layers)
                     for part in ("key", "value")]

    def input_names(self) -> list[str]:
        if not self.layers:
            return ["input_ids", "attention_mask"]
        return ["input_ids", "attention_mask", "position_ids", *self.past]

    def output_names(self) -> list[str]:
        return ["logits", *(name.replace("past_key_values", "present") for name in self.past)]

    def axes(self) -> dict[str, dict[int, str]]:
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "total"},
                "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
        axes.update({name: {0: "batch", 2: "past"} for name in self.past})
        axes.update({name: {0: "batch", 2: "total"} for name in self.output_names()[1:]})
        return {name: axes[name] for name in self.input_names() + self.output_names()}

    def sample_inputs(self) -> tuple:
        # A non-empty cache when tracing, so the cache's "grow" path is the one recorded.
        past_len = 3 if self.layers else 0
        seq = 2
        ids = torch.ones(1, seq, dtype=torch.long)
        mask = torch.ones(1, past_len + seq, dtype=torch.long)
        if not self.layers:
            return (ids, mask)
        kv_heads, head_dim = _cache_shape(self.model.config)
        past = [torch.randn(1, kv_heads, past_len, head_dim) for _ in self.past]
        return (ids, mask, torch.arange(past_len, past_len + seq).unsqueeze(0), *past)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None,
                *past: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        mask = _causal_mask(input_ids, attention_mask)
        if not self.layers:
            return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1])
                                             for i in range(self.layers)])
        out = self.model(input_ids=input_ids, position_ids=position_ids, past_key_values=cache,
                         attention_mask=mask, use_cache=True)
        presents: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (out.logits, *presents)


def _cache_shape(config) -> tuple[int, int]:
    """(key/value heads, head size) of a decoder config."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return kv_heads, head_dim


def _causal_mask(input_ids, attention_mask):
    """The additive 4-D mask [batch, 1, seq, total]: transformers uses a 4-D mask as given.

    Built here from tensor ops, because transformers' own mask code uses
    ``torch.vmap``, which the TorchScript exporter cannot trace.
    """
    seq, total = input_ids.shape[1], attention_mask.shape[1]
    query_pos = torch.arange(seq) + (total - seq)
    allowed = torch.arange(total)[None, :] <= query_pos[:, None]
    allowed = allowed[None, None] & attention_mask[:, None, None, :].bool()
    blocked = torch.full(allowed.shape, torch.finfo(torch.float32).min)
    return torch.where(allowed, torch.zeros_like(blocked), blocked)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export a Hugging Face causal LM to ONNX "
                                                 "for OpenClaw's onnx engine.")
    parser.add_argument("src", type=Path, help="Hugging Face model folder")
    parser.add_argument("dst", type=Path, help="folder to write model.onnx and the tokenizer to")
    parser.add_argument("--no-cache", action="store_true",
                        help="no key/value cache: every step re-runs the whole sequence")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folder = export_to_onnx(args.src, args.dst, with_cache=not args.no_cache)
    logger.info("wrote %s", folder / MODEL_FILE)


if __name__ == "__main__":
    main()
