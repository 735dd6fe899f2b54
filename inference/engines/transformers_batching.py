"""The ``transformers`` engine's batching: a request's sampling settings, the incremental
detokenizer that holds back partial characters and stop strings, one request in a
batch (``Job``) and the decode loop over a batch (``Batch``), run in a worker thread
(``inference.engines.transformers``).

torch is imported inside the functions that run a batch: the web process imports this
module only to register the kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.utils import translation
from django.utils.translation import gettext as _

from ..errors import BadRequest, EngineError, EngineUnavailable, ServerError
from .base import ChatRequest, Delta, EndpointConfig, Usage

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_BATCH_WAIT_MS = 5.0

@dataclass
class BatchStats:
    """What the batcher has done: read by the tests and the benchmark."""

    batches: int = 0  # batches run
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=1000))  # of the last batches
    steps: int = 0  # forward passes (the prefill counts as one)
    dropped: int = 0  # sequences stopped early: cancelled, or their consumer went away


@dataclass(frozen=True)
class Sampling:
    """The sampling settings of one request: request values over ``config.params``."""

    max_tokens: int
    temperature: float | None = None  # 0 or None: greedy
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()


def resolve_sampling(config: EndpointConfig, request: ChatRequest) -> Sampling:
    """Request values first, then the endpoint's ``params``, then the defaults."""
    params = config.params

    def pick(name: str, value: Any) -> Any:
        return value if value is not None else params.get(name)

    stop = pick("stop", request.stop) or ()
    top_k = pick("top_k", request.extra.get("top_k"))
    sampling = Sampling(
        max_tokens=int(pick("max_tokens", request.max_tokens) or config.max_output_tokens),
        temperature=optional(float, pick("temperature", request.temperature)),
        top_p=optional(float, pick("top_p", request.top_p)),
        top_k=optional(int, top_k) or None,  # 0 means no top-k, as in transformers
        seed=optional(int, pick("seed", request.seed)),
        stop=(stop,) if isinstance(stop, str) else tuple(s for s in stop if s),
    )
    check_sampling(sampling)
    return sampling


def optional(cast: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else cast(value)


def check_sampling(sampling: Sampling) -> None:
    """Refuse values that would break the batch's decode loop, not just this request."""
    if sampling.max_tokens < 1:
        raise BadRequest(_("max_tokens must be at least 1, not %(value)s")
                         % {"value": sampling.max_tokens})
    if sampling.temperature is not None and sampling.temperature < 0:
        raise BadRequest(_("temperature must not be negative, not %(value)s")
                         % {"value": sampling.temperature})
    if sampling.top_p is not None and not 0 < sampling.top_p <= 1:
        raise BadRequest(_("top_p must be in (0, 1], not %(value)s")
                         % {"value": sampling.top_p})
    if sampling.top_k is not None and sampling.top_k < 0:
        raise BadRequest(_("top_k must not be negative, not %(value)s")
                         % {"value": sampling.top_k})


def message_content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def find_stop(text: str, stops: Iterable[str], start: int) -> int | None:
    """Where the first stop string begins in ``text[start:]``, or None."""
    found = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: tuple[str, ...], start: int) -> int:
    """How many trailing characters could be the start of a stop string (kept unsent)."""
    longest = max((len(stop) for stop in stops), default=1) - 1
    for size in range(min(longest, len(text) - start), 0, -1):
        tail = text[-size:]
        if any(stop.startswith(tail) for stop in stops):
            return size
    return 0


class Detokenizer:
    """Incremental decoding: text only once its bytes form whole characters.

    Decodes a small window (the tokens of the previous emission plus the new
    ones) rather than everything so far, so a step costs the same at token 1000
    as at token 1; the window's first tokens give decoders that strip a leading
    space (SentencePiece) the context they need. Trailing U+FFFD (a character
    cut between tokens) is held back until the next token completes it.
    """

    MAX_PENDING = 16  # tokens of undecodable bytes after which they are shown as U+FFFD

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # start of the decoding window
        self._read = 0  # tokens whose text is complete and shown
        self._shown = 0  # characters after ``_read``'s text already returned

    def push(self, token: int) -> str:
        self.ids.append(token)
        return self._advance(force=len(self.ids) - self._read > self.MAX_PENDING)

    def flush(self) -> str:
        """What is left, incomplete characters included (as U+FFFD)."""
        return self._advance(force=True)

    def _advance(self, *, force: bool) -> str:
        before = self._decode(self.ids[self._prefix:self._read])
        new = self._decode(self.ids[self._prefix:])[len(before):]
        complete = force or not new.endswith("\ufffd")
        if not complete:
            new = new.rstrip("\ufffd")
        piece = new[self._shown:]
        if complete:
            self._prefix, self._read, self._shown = self._read, len(self.ids), 0
        else:
            self._shown = max(self._shown, len(new))
        return piece


@dataclass(eq=False)
class Job:
    """One request, shared by the event loop and the generation thread."""

    request_id: str
    prompt_ids: list[int]
    sampling: Sampling
    detokenizer: Detokenizer
    generator: torch.Generator | None = None
    queue: asyncio.Queue[Delta | EngineError] = field(default_factory=asyncio.Queue)
    # The request's language, for an error the batch gives it (the batch runs elsewhere).
    language: str | None = field(default_factory=translation.get_language)
    cancelled: bool = False  # set by the loop; the thread stops the sequence at its next step
    started: bool = False  # taken into a batch
    done: bool = False  # its last delta (or error) has been handed over
    text: str = ""
    sent: int = 0  # characters of ``text`` already streamed
    unsent_tokens: int = 0

    def accept(self, token: int, eos: frozenset[int]) -> Delta | None:
        """Take the next token; return what to stream now, if anything."""
        self.unsent_tokens += 1
        is_eos = token in eos
        last = is_eos or len(self.detokenizer.ids) + 1 >= self.sampling.max_tokens
        if is_eos:
            self.detokenizer.ids.append(token)  # counted, never shown
        else:
            self.text += self.detokenizer.push(token)
        if last:
            self.text += self.detokenizer.flush()
        cut = find_stop(self.text, self.sampling.stop, self.sent)
        if cut is not None:
            self.text = self.text[:cut]
            return self.finish("stop")
        if last:
            return self.finish("stop" if is_eos else "length")
        return self._emit()

    def _emit(self) -> Delta | None:
        end = len(self.text) - held_back(self.text, self.sampling.stop, self.sent)
        if end <= self.sent:
            return None
        piece, self.sent = self.text[self.sent:end], end
        tokens, self.unsent_tokens = self.unsent_tokens, 0
        return Delta(text=piece, tokens=tokens)

    def finish(self, reason: str) -> Delta:
        self.done = True
        rest = "" if reason == "cancelled" else self.text[self.sent:]
        usage = Usage(prompt_tokens=len(self.prompt_ids),
                      completion_tokens=len(self.detokenizer.ids))
        return Delta(text=rest, tokens=self.unsent_tokens, finish_reason=reason, usage=usage)


class Batch:
    """The tensors of a running batch; row ``i`` belongs to ``jobs[i]``."""

    def __init__(self, jobs: list[Job], pad_id: int, device: str, explicit_mask: bool):
        # torch: heavy and optional (the local extra), loaded only where a model runs
        import torch

        width = max(len(job.prompt_ids) for job in jobs)
        pads = [width - len(job.prompt_ids) for job in jobs]
        self.jobs = jobs
        self.input_ids = torch.tensor(
            [[pad_id] * pad + job.prompt_ids for pad, job in zip(pads, jobs, strict=True)],
            device=device)
        self.mask = torch.tensor([[0] * pad + [1] * (width - pad) for pad in pads], device=device)
        # Left padding shifts the prompts: count positions from each one's first real token.
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.past: Any = None
        self.explicit_mask = explicit_mask and any(pads)

    def attention_mask(self) -> torch.Tensor:
        """The 2D padding mask, or (padded batches, SDPA) a ready 4D boolean one.

        With padding, transformers rebuilds a 4D mask from the 2D one at every
        step (about 2 ms with the tiny model on CPU, 4x the forward pass itself);
        built here it is a view for a decode step and one small tensor for the prefill.
        """
        if not self.explicit_mask:
            return self.mask
        # torch: heavy and optional (the local extra), loaded only where a model runs
        import torch

        keys = self.mask.bool()[:, None, None, :]
        if self.past is not None:
            return keys
        width = self.mask.shape[-1]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.mask.device).tril()
        # A padding query sees itself: a row with nothing to attend to would give NaN.
        return (causal & keys) | torch.eye(width, dtype=torch.bool, device=self.mask.device)

    def advance(self, tokens: list[int]) -> None:
        """Feed each row its new token at the next step."""
        # torch: heavy and optional (the local extra), loaded only where a model runs
        import torch

        self.input_ids = torch.tensor(tokens, device=self.mask.device).unsqueeze(-1)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=-1)
        self.positions = self.positions[:, -1:] + 1

    def compact(self) -> None:
        """Drop the rows of finished sequences, KV cache included."""
        # torch: heavy and optional (the local extra), loaded only where a model runs
        import torch

        keep = [row for row, job in enumerate(self.jobs) if not job.done]
        if len(keep) == len(self.jobs):
            return
        self.jobs = [self.jobs[row] for row in keep]
        if not keep:
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.input_ids, self.mask = self.input_ids[index], self.mask[index]
        self.positions = self.positions[index]
        if self.past is not None:
            self.past.batch_select_indices(index)


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """One token from one row of logits, with temperature, top-k and top-p."""
    # torch: heavy and optional (the local extra), loaded only where a model runs
    import torch

    assert sampling.temperature is not None  # greedy rows take the argmax, never come here
    scores = logits.float() / sampling.temperature
    if sampling.top_k and sampling.top_k < scores.numel():
        kth = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        ordered, order = torch.sort(scores, descending=True)
        probs = ordered.softmax(-1)
        # Keep the smallest head whose mass reaches top_p, and at least the first token.
        beyond = (probs.cumsum(-1) - probs) >= sampling.top_p
        beyond[0] = False
        scores = scores.index_fill(0, order[beyond], float("-inf"))
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))


def full_attention_sdpa(config: Any) -> bool:
    """Whether a ready 4D mask is right for this model: SDPA, every layer full attention."""
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(config, "sliding_window", None) or getattr(config, "attention_chunk_size", None):
        return False
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return all(kind == "full_attention" for kind in layer_types)


def as_engine_error(exc: BaseException) -> EngineError:
    """A fresh error for one request of a batch that failed (in the active language)."""
    if isinstance(exc, EngineUnavailable):
        return EngineUnavailable(exc.message)
    return ServerError(_("local generation failed: %(error)s")
                       % {"error": f"{type(exc).__name__}: {exc}"})


def deliver(outbox: list[tuple[Job, Delta | EngineError]]) -> None:
    for job, item in outbox:
        job.queue.put_nowait(item)
