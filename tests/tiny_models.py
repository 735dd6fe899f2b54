"""Tiny Hugging Face models built on disk, on the spot: nothing is downloaded.

``build_tiny_llama(folder)`` trains a byte-level BPE tokenizer on a few
sentences, builds a 2-layer Llama (hidden 64) with random weights and a chat
template, and saves both with ``save_pretrained`` so the real loading code
(``AutoModelForCausalLM.from_pretrained``) reads them back.
"""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = [
    "OpenClaw routes every request to the right model.",
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, this is a tiny language model for tests.",
    "Tokens stream back to the caller one by one.",
    "你好，世界。这是一个测试用的小模型。",
] * 20

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(folder: Path, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>",
                                   eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return fast


def _unwanted_ids(tokenizer) -> list[int]:
    special = set(tokenizer.all_special_ids) | set(
        tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>", "<|system|>"]))
    def unreadable(text: str) -> bool:
        return "\ufffd" in text or any(ord(c) < 32 and c not in "\n\t" for c in text)

    return [i for i in range(len(tokenizer)) if i in special or unreadable(tokenizer.decode([i]))]


def build_tiny_llama(folder: Path | str, *, seed: int = 0, layers: int = 2,
                     hidden: int = 64) -> Path:
    """Write a tiny Llama + tokenizer to ``folder``; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Random weights would pick special tokens and lone UTF-8 bytes; zeroing
        # their (tied) embedding rows gives them logit 0, so the model babbles
        # readable text until max_tokens: deterministic lengths for tests.
        for token_id in _unwanted_ids(tokenizer):
            model.model.embed_tokens.weight[token_id].zero_()
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "openclaw-tiny.json").write_text(json.dumps({"seed": seed, "layers": layers,
                                                           "hidden": hidden}))
    return folder
