"""LoRA fine-tuning jobs: create (checked), run in a Celery worker, cancel.

``run_job`` loads the base endpoint's Hugging Face folder, wraps it with a peft LoRA
adapter and trains on the dataset's replies (prompt tokens are masked: only what the
assistant says is learnt), one conversation prefix per step. The loss is written to
the job as ``[step, loss]`` pairs while it trains (at most ``MAX_LOSS_POINTS``; a
longer run records the mean of each window of steps). The adapter is saved under
``<data>/finetune/job-<id>/adapter`` and merged into a full model folder
``<data>/finetune/job-<id>/model``, which the ``transformers`` engine loads as it
loads any folder; that folder is registered as a new, disabled ``ModelEndpoint``.

Cancel: a queued job is cancelled at once (its task finds it so and does nothing); a
running one stops at its next step and saves nothing.

A worker that dies: its run's heartbeat (written with each progress write and every
few seconds by a ``Keepalive`` thread, also while the model loads or saves) stops;
beat's watchdog (``resume_stalled``) queues a job nobody has beaten for a lease
(``OPENCLAW_JOB_LEASE_S``) again under a new task id, and it **trains again from
step 0** (no checkpoint is kept: the adapter of a half-run is not saved). The job
belongs to the run whose task id it holds (``celery_task_id``): an older run still
alive — only slow — finds the job no longer its own at its next step and stops,
saving nothing, and the old task if the broker hands it out again is skipped.

torch, transformers and peft are imported inside the functions: the web process
creates jobs without them.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from inference.kinds import EngineKind
from routing.models import ModelEndpoint

from . import liveness
from .datasets import dataset_rows
from .models import Dataset, FineTuneJob, FineTuneQueue, FineTuneStatus

logger = logging.getLogger(__name__)

RUN_TASK = "jobs.finetune"  # jobs.tasks.run_finetune
MAX_LOSS_POINTS = 1000
FLUSH_EVERY_S = 0.5  # how often a running job writes its progress and reads "cancel"
LIMITS = {  # field -> (least, most)
    "lora_rank": (1, 256),
    "lora_alpha": (1, 1024),
    "learning_rate": (1e-7, 1.0),
    "epochs": (1, 100),
    "max_steps": (0, 1_000_000),
}


class FineTuneRefused(Exception):
    """Bad settings, or an action the job's state does not allow."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class Cancelled(Exception):
    """The job was cancelled while it trained."""


class Superseded(Exception):
    """The job was handed to another run (this one stalled past its lease)."""


# --- creating and cancelling -------------------------------------------------------


def check_base(endpoint: ModelEndpoint) -> Path:
    """The base endpoint's model folder, if it can be fine-tuned."""
    if endpoint.engine != EngineKind.TRANSFORMERS:
        raise FineTuneRefused(_("Only models of the “transformers” engine can be "
                                "fine-tuned; %(name)s uses “%(engine)s”.")
                              % {"name": endpoint.name, "engine": endpoint.engine},
                              field="base_endpoint")
    folder = Path(endpoint.model_path or "")
    if not endpoint.model_path or not (folder / "config.json").is_file():
        raise FineTuneRefused(_("The base model's folder “%(path)s” has no config.json.")
                              % {"path": endpoint.model_path}, field="base_endpoint")
    return folder


def check_queue(base: ModelEndpoint, queue: str | None) -> None:
    """The gpu queue trains on the base's GPU: it must have one."""
    if queue == FineTuneQueue.GPU and base.gpu_id is None:
        raise FineTuneRefused(_("The gpu queue needs a base model with a GPU id."),
                              field="queue")


def check_settings(values: dict[str, Any]) -> None:
    """Refuse LoRA settings outside their range, naming the field."""
    for field, (least, most) in LIMITS.items():
        value = values.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not least <= value <= most or (field != "learning_rate"
                                                and not float(value).is_integer()):
            raise FineTuneRefused(_("“%(field)s” must be between %(least)s and %(most)s.")
                                  % {"field": field, "least": least, "most": most},
                                  field=field)
    queue = values.get("queue")
    if queue is not None and queue not in FineTuneQueue.values:
        raise FineTuneRefused(_("“queue” must be one of: %(allowed)s.")
                              % {"allowed": ", ".join(FineTuneQueue.values)}, field="queue")


def create_job(base_endpoint: ModelEndpoint, dataset: Dataset, *, user=None,
               **settings_: Any) -> FineTuneJob:
    """Check and save a job, then queue its task once the transaction commits."""
    check_base(base_endpoint)
    if dataset.line_count < 1:
        raise FineTuneRefused(_("Dataset %(dataset)s has no lines.") % {"dataset": dataset},
                              field="dataset")
    unknown = sorted(set(settings_) - set(LIMITS) - {"queue", "suffix"})
    if unknown:
        raise FineTuneRefused(_("Unknown setting “%(field)s”.") % {"field": unknown[0]},
                              field=unknown[0])
    check_settings(settings_)
    check_queue(base_endpoint, settings_.get("queue"))
    with transaction.atomic():
        job = FineTuneJob.objects.create(base_endpoint=base_endpoint, dataset=dataset,
                                         created_by=user, celery_task_id=str(uuid.uuid4()),
                                         **settings_)
        transaction.on_commit(lambda: enqueue(job))
    return job


def enqueue(job: FineTuneJob) -> None:
    current_app.send_task(RUN_TASK, (job.pk,), queue=job.queue, task_id=job.celery_task_id)


def cancel_job(job: FineTuneJob) -> FineTuneJob:
    """Cancel a queued job now; ask a running one to stop at its next step."""
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().get(pk=job.pk)
        if job.finished:
            raise FineTuneRefused(_("Job %(id)s has already ended (%(status)s).")
                                  % {"id": job.pk, "status": job.get_status_display()})
        job.cancel_requested = True
        fields = ["cancel_requested"]
        if job.status == FineTuneStatus.QUEUED:
            job.status, job.finished_at = FineTuneStatus.CANCELLED, timezone.now()
            fields += ["status", "finished_at"]
        job.save(update_fields=fields)
    return job


def resume_stalled() -> int:
    """Beat's watchdog: a running job no run has beaten for a lease lost its worker;
    it is queued again under a new task id and trains from the start. The number
    queued. A job whose row is locked (starting, cancelling) waits for the next tick."""
    queued = 0
    stale = liveness.lease()
    for pk in FineTuneJob.stalled([FineTuneStatus.RUNNING], stale).values_list("pk",
                                                                             flat=True):
        with transaction.atomic():
            job = (FineTuneJob.stalled([FineTuneStatus.RUNNING], stale).filter(pk=pk)
                   .select_for_update(skip_locked=True).first())
            if job is None:
                continue
            job.status, job.celery_task_id = FineTuneStatus.QUEUED, str(uuid.uuid4())
            job.heartbeat_at, job.requeued = timezone.now(), F("requeued") + 1
            job.save(update_fields=["status", "celery_task_id", "heartbeat_at", "requeued"])
            job.refresh_from_db(fields=["requeued"])
            transaction.on_commit(partial(enqueue, job))
        logger.warning("fine-tuning job %s: no run has written its progress for %d s "
                       "(its worker died?); queued again as task %s, from step 0",
                       pk, stale.total_seconds(), job.celery_task_id)
        queued += 1
    return queued


# --- running (in a worker) -------------------------------------------------------------


def run_job(job_id: int, task_id: str | None = None) -> None:
    """Train a job to its end: succeeded (endpoint registered), cancelled or failed.
    ``task_id``: the Celery task's, skipped unless the job still names it."""
    job = _start(job_id, task_id)
    if job is None:
        return
    try:
        with liveness.Keepalive(lambda: _mine(job).update(heartbeat_at=timezone.now()),
                                name=f"finetune-{job.pk}"):
            endpoint = train(job)
    except Superseded:
        logger.warning("fine-tuning job %s was handed to another run; this one stops",
                       job_id)
    except Cancelled:
        _finish(job, FineTuneStatus.CANCELLED)
    except Exception as exc:  # recorded on the job: the admin and CLI show it
        logger.exception("fine-tuning job %s failed", job_id)
        _finish(job, FineTuneStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    else:
        job.result_endpoint = endpoint
        _finish(job, FineTuneStatus.SUCCEEDED)
    finally:
        gc.collect()  # the model and optimiser: a worker lives on after the job


def _mine(job: FineTuneJob) -> QuerySet[FineTuneJob]:
    """The job's row while this run still owns it (running under its task id)."""
    return FineTuneJob.objects.filter(pk=job.pk, celery_task_id=job.celery_task_id,
                                      status=FineTuneStatus.RUNNING)


def _start(job_id: int, task_id: str | None = None) -> FineTuneJob | None:
    with transaction.atomic():
        job = FineTuneJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.finished:
            return None  # deleted, or cancelled while queued
        if task_id and job.celery_task_id and task_id != job.celery_task_id:
            logger.warning("fine-tuning job %s was queued again as task %s: task %s "
                           "skipped", job_id, job.celery_task_id, task_id)
            return None
        if job.status == FineTuneStatus.RUNNING:
            if job.running_elsewhere(liveness.lease()):
                logger.warning("fine-tuning job %s is running elsewhere: duplicate skipped",
                               job_id)
                return None
            logger.warning("fine-tuning job %s redelivered (its worker died): training "
                           "again", job_id)
        job.status, job.started_at = FineTuneStatus.RUNNING, timezone.now()
        job.heartbeat_at = job.started_at
        job.step, job.losses, job.error = 0, [], ""
        job.save(update_fields=["status", "started_at", "heartbeat_at", "step", "losses",
                                "error"])
    return job


def _finish(job: FineTuneJob, status: str, error: str = "") -> None:
    """Record the end — unless the job was handed to another run meanwhile."""
    job.set_error(error)
    ended = _mine(job).update(
        status=status, error=job.error, finished_at=timezone.now(),
        result_endpoint=job.result_endpoint, step=job.step, losses=job.losses,
        total_steps=job.total_steps)
    if not ended:
        logger.warning("fine-tuning job %s was handed to another run; its end (%s) is "
                       "not recorded", job.pk, status)
        return
    job.refresh_from_db()


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 where the token is prompt, not reply


def build_examples(rows: list[dict], tokenizer: Any, max_tokens: int) -> list[Example]:
    """One example per assistant reply: the conversation up to it, only the reply
    (and its end-of-turn token) labelled. Longer than ``max_tokens``: cut from the
    left, keeping the reply."""
    examples = []
    for row in rows:
        messages = row["messages"]
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = _encode(tokenizer, messages[:index], generation_prompt=True)
            full = _encode(tokenizer, messages[:index + 1], generation_prompt=False)
            if full[:len(prompt)] != prompt:  # a template that rewrites earlier turns
                prompt = []
            labels = [-100] * len(prompt) + full[len(prompt):]
            if len(full) > max_tokens:
                full, labels = full[-max_tokens:], labels[-max_tokens:]
            if any(label != -100 for label in labels):
                examples.append(Example(full, labels))
    return examples


def _encode(tokenizer: Any, messages: list[dict], generation_prompt: bool) -> list[int]:
    if not messages:
        return []
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=generation_prompt)
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        text += "assistant: " if generation_prompt else ""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def output_folder(job: FineTuneJob) -> Path:
    return Path(settings.OPENCLAW_FINETUNE_DIR) / f"job-{job.pk}"


def train(job: FineTuneJob) -> ModelEndpoint:
    """Train, save the adapter and the merged model, register the endpoint."""
    # torch, peft, transformers: heavy and optional (the local extra), loaded only in
    # the worker that trains
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = job.base_endpoint
    folder = check_base(base)
    device = _device(job, base, torch)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # transformers decorates `to` with functools.wraps, whose typeshed type is not bound
    # as a method: mypy takes `device` for `self`
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(
        device)  # type: ignore[arg-type]  # wraps() loses the method binding
    examples = build_examples(dataset_rows(job.dataset), tokenizer, base.context_window)
    if not examples:
        raise FineTuneRefused(_("The dataset has no reply to learn from."))
    model = get_peft_model(model, LoraConfig(
        r=job.lora_rank, lora_alpha=job.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
        target_modules=None if _known_architecture(model) else "all-linear"))
    _train_loop(job, model, examples, device, torch)
    return _save(job, model, tokenizer)


def _device(job: FineTuneJob, base: ModelEndpoint, torch: Any) -> str:
    if job.queue == FineTuneQueue.GPU:
        if not torch.cuda.is_available():
            raise FineTuneRefused(_("The gpu queue's worker has no CUDA device."))
        return f"cuda:{base.gpu_id or 0}"
    return "cpu"


def _known_architecture(model: Any) -> bool:
    # peft: heavy and optional (the local extra), loaded only where a job trains
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    return model.config.model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING


def plan_steps(job: FineTuneJob, examples: int) -> int:
    steps = job.epochs * examples
    return min(steps, job.max_steps) if job.max_steps else steps


def _train_loop(job: FineTuneJob, model: Any, examples: list[Example], device: str,
                torch: Any) -> None:
    job.total_steps = plan_steps(job, len(examples))
    window = max(1, math.ceil(job.total_steps / MAX_LOSS_POINTS))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=job.learning_rate)
    order = random.Random(job.pk)
    model.train()
    pending: list[float] = []
    flushed_at = time.monotonic()
    for step in range(1, job.total_steps + 1):
        if (step - 1) % len(examples) == 0:
            order.shuffle(examples)
        example = examples[(step - 1) % len(examples)]
        loss = model(input_ids=torch.tensor([example.input_ids], device=device),
                     labels=torch.tensor([example.labels], device=device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        pending.append(float(loss.detach()))
        job.step = step
        if len(pending) == window or step == job.total_steps:
            job.losses.append([step, round(sum(pending) / len(pending), 6)])
            pending = []
        if step == job.total_steps or time.monotonic() - flushed_at >= FLUSH_EVERY_S:
            _flush(job)
            flushed_at = time.monotonic()


def _flush(job: FineTuneJob) -> None:
    """Write progress with the heartbeat; raise ``Cancelled`` when a cancel was asked
    for, ``Superseded`` when the job is no longer this run's."""
    mine = _mine(job)
    if not mine.update(heartbeat_at=timezone.now(), step=job.step, losses=job.losses,
                       total_steps=job.total_steps):
        raise Superseded
    if mine.filter(cancel_requested=True).exists():
        raise Cancelled


def _save(job: FineTuneJob, model: Any, tokenizer: Any) -> ModelEndpoint:
    out = output_folder(job)
    shutil.rmtree(out, ignore_errors=True)  # a redelivered job's partial output
    model.save_pretrained(out / "adapter")
    merged = model.merge_and_unload()
    merged.to("cpu").save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    job.output_path = str(out)
    job.save(update_fields=["output_path"])
    return register_endpoint(job, out / "model")


def register_endpoint(job: FineTuneJob, folder: Path) -> ModelEndpoint:
    """The fine-tuned model as a disabled endpoint, configured like its base."""
    base = job.base_endpoint
    name = f"{base.name}-ft-{job.suffix or job.pk}"[:128]
    endpoint, _created = ModelEndpoint.objects.update_or_create(
        name=name, endpoint_url="", model_path=str(folder), defaults={
            "engine": EngineKind.TRANSFORMERS, "enabled": False,
            "display_name": f"{base.display_name or base.name} (fine-tuned #{job.pk})",
            "description": f"LoRA r={job.lora_rank} α={job.lora_alpha} on dataset "
                           f"{job.dataset}, job {job.pk}.",
            "context_window": base.context_window, "max_output_tokens": base.max_output_tokens,
            "gpu_id": base.gpu_id, "max_batch": base.max_batch,
            "tool_format": base.tool_format, "default_params": base.default_params,
            "first_byte_timeout": base.first_byte_timeout,
            "total_timeout": base.total_timeout})
    return endpoint


# --- reading ---------------------------------------------------------------------------


def job_dict(job: FineTuneJob) -> dict[str, Any]:
    """The JSON the CLI and the studio's Jobs page read."""
    return {
        "id": job.pk, "status": job.status, "base_model": job.base_endpoint.name,
        "base_endpoint_id": job.base_endpoint_id, "dataset": str(job.dataset),
        "dataset_id": job.dataset_id, "queue": job.queue,
        "lora": {"rank": job.lora_rank, "alpha": job.lora_alpha,
                 "learning_rate": job.learning_rate, "epochs": job.epochs,
                 "max_steps": job.max_steps},
        "step": job.step, "total_steps": job.total_steps,
        "progress": round(job.progress, 4), "losses": job.losses,
        "output_path": job.output_path,
        "result_endpoint_id": job.result_endpoint_id,
        "result_model": job.result_endpoint.name if job.result_endpoint else None,
        "error": job.error, "cancel_requested": job.cancel_requested,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


@dataclass(frozen=True)
class Chart:
    """A loss curve laid out for an SVG ``viewBox`` of ``width`` × ``height``."""

    width: int
    height: int
    points: str  # the polyline's "x,y x,y ..."
    first_step: int
    last_step: int
    low: float
    high: float
    y_ticks: list[tuple[float, float]]  # (y, loss)


def loss_chart(losses: list[list[float]], width: int = 520, height: int = 240,
               margin: int = 48) -> Chart | None:
    """The recorded ``[step, loss]`` pairs scaled into the chart's plot area (a
    ``margin`` on the left and bottom for the axes' labels); None before any step."""
    if not losses:
        return None
    steps = [float(step) for step, _loss in losses]
    values = [float(loss) for _step, loss in losses]
    low, high = min(values), max(values)
    spread = (high - low) or 1.0
    left, right, top, bottom = margin, width - 12, 12, height - margin // 2 - 12
    span = (steps[-1] - steps[0]) or 1.0

    def x(step: float) -> float:
        return left + (step - steps[0]) / span * (right - left)

    def y(loss: float) -> float:
        return bottom - (loss - low) / spread * (bottom - top)

    points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in zip(steps, values, strict=True))
    ticks = [(round(y(low + spread * i / 4), 1), round(low + spread * i / 4, 3))
             for i in range(5)]
    return Chart(width, height, points, int(steps[0]), int(steps[-1]), low, high, ticks)
