"""Fine-tuning end to end: three replies annotated, a dataset exported (corrections
in, PII out), the tiny on-disk Llama LoRA-trained in a real Celery worker on queue
``cpu`` (loss recorded per step, and falling), the merged model registered as a
disabled endpoint, enabled, and generating through the ``transformers`` engine in
the worker. Then cancel (queued and running) and the refusals."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from inference.engines.base import ChatRequest
from inference.registry import build_engine
from jobs import finetune
from jobs.annotation import AnnotationInput, annotate
from jobs.datasets import dataset_rows, export_dataset
from jobs.finetune import FineTuneRefused
from jobs.models import FineTuneJob, FineTuneStatus
from routing.models import ModelEndpoint
from routing.services import endpoint_config
from tests.jobs.training_data import conversation
from tests.tiny_models import build_tiny_llama

logger = logging.getLogger(__name__)
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "base", seed=0)


@pytest.fixture
def base(tiny_llama) -> ModelEndpoint:
    return ModelEndpoint.objects.create(
        name="tiny", engine="transformers", model_path=str(tiny_llama), context_window=512,
        max_output_tokens=12, first_byte_timeout=60, total_timeout=120,
        default_params={"temperature": 0}, tool_format="hermes")


@pytest.fixture
def annotated_dataset():
    alice = get_user_model().objects.create_user("alice", password="pw", is_staff=True)
    [capital] = conversation(alice, ("Capital of France?", "Lyon"))
    [fox] = conversation(alice, ("Hello world", "The quick brown fox."))
    [greeting] = conversation(alice, ("Who are you?", "I am a bot"))
    conversation(alice, ("Reach me", "Call +1 415 555 0100 or mail ann@corp.example"))
    annotate(alice, capital.pk, AnnotationInput(rating="down", corrected_content="Paris."))
    annotate(alice, fox.pk, AnnotationInput(rating="up", tags=["gold"]))
    annotate(alice, greeting.pk, AnnotationInput(corrected_content="I am OpenClaw."))
    return export_dataset("e2e")


def wait_for(job: FineTuneJob, done, timeout: float = 120) -> FineTuneJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if done(job):
            return job
        time.sleep(0.1)
    pytest.fail(f"job {job.pk} stuck: {job.status} step {job.step} {job.error}")


async def generate(endpoint: ModelEndpoint, text: str) -> str:
    engine = build_engine(endpoint_config(endpoint))
    request = ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=12)
    return "".join([delta.text async for delta in engine.stream(request)])


def test_annotated_replies_fine_tune_into_a_new_endpoint_that_generates(
        base, annotated_dataset, start_worker, tmp_path):
    # given: the dataset carries the corrections and leaves the PII out
    rows = dataset_rows(annotated_dataset)
    replies = [row["messages"][-1]["content"] for row in rows]
    assert replies == ["Paris.", "The quick brown fox.", "I am OpenClaw."]
    assert annotated_dataset.excluded_count == 1
    start_worker(queues="cpu", env={"OPENCLAW_FINETUNE_DIR": str(tmp_path / "ft")})
    # when
    started = time.monotonic()
    job = finetune.create_job(base, annotated_dataset, lora_rank=8, lora_alpha=32,
                              learning_rate=3e-2, epochs=20, max_steps=36, queue="cpu")
    job = wait_for(job, lambda j: j.finished)
    took = time.monotonic() - started
    # then: trained, loss recorded per step and falling
    assert job.status == FineTuneStatus.SUCCEEDED, job.error
    losses = [loss for _step, loss in job.losses]
    assert [step for step, _loss in job.losses] == list(range(1, 37))
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    logger.info("fine-tune: 36 steps in %.1f s, loss %.3f -> %.3f", took, first, last)
    # The tiny Llama's random tied embeddings cap its logits (about ±1.3), so its loss
    # cannot fall far below ln(vocab) ≈ 6; a steady fall of a few tenths is the signal.
    assert last < first - 0.2
    assert (Path(job.output_path) / "adapter" / "adapter_config.json").is_file()
    # the new endpoint is registered, disabled, until an admin enables it
    endpoint = job.result_endpoint
    assert (endpoint.name, endpoint.engine, endpoint.enabled) == (f"tiny-ft-{job.pk}",
                                                                  "transformers", False)
    assert endpoint.tool_format == "hermes"  # configured like its base
    endpoint.enabled = True
    endpoint.save(update_fields=["enabled"])
    tuned = asyncio.run(generate(endpoint, "Capital of France?"))
    original = asyncio.run(generate(base, "Capital of France?"))
    logger.info("base: %r; fine-tuned: %r", original, tuned)
    assert tuned and tuned != original


def test_running_job_is_cancelled_and_saves_nothing(base, annotated_dataset, start_worker,
                                                    tmp_path):
    start_worker(queues="cpu", env={"OPENCLAW_FINETUNE_DIR": str(tmp_path / "ft")})
    job = finetune.create_job(base, annotated_dataset, epochs=100, max_steps=100_000)
    job = wait_for(job, lambda j: j.status == FineTuneStatus.RUNNING and j.step > 0)
    finetune.cancel_job(job)
    job = wait_for(job, lambda j: j.finished, timeout=30)
    assert job.status == FineTuneStatus.CANCELLED
    assert 0 < job.step < 100_000 and job.losses
    assert job.result_endpoint is None and not (tmp_path / "ft").exists()
    with pytest.raises(FineTuneRefused, match="already ended"):
        finetune.cancel_job(job)


def test_queued_job_cancelled_before_a_worker_takes_it_never_runs(
        base, annotated_dataset, start_worker):
    job = finetune.create_job(base, annotated_dataset, max_steps=5)  # no worker yet
    finetune.cancel_job(job)
    job.refresh_from_db()
    assert job.status == FineTuneStatus.CANCELLED
    start_worker(queues="cpu")
    time.sleep(2)  # the worker receives the task and skips it
    job.refresh_from_db()
    assert (job.status, job.started_at, job.step) == (FineTuneStatus.CANCELLED, None, 0)


def test_only_transformers_models_with_a_folder_can_be_fine_tuned(annotated_dataset,
                                                                    tmp_path):
    echo = ModelEndpoint.objects.create(name="echo", engine="echo")
    with pytest.raises(FineTuneRefused, match="transformers"):
        finetune.create_job(echo, annotated_dataset)
    missing = ModelEndpoint.objects.create(name="gone", engine="transformers",
                                           model_path=str(tmp_path / "nowhere"))
    with pytest.raises(FineTuneRefused, match="config.json"):
        finetune.create_job(missing, annotated_dataset)


@pytest.mark.parametrize(("settings", "field"), [
    ({"lora_rank": 0}, "lora_rank"),
    ({"learning_rate": 5}, "learning_rate"),
    ({"epochs": 1.5}, "epochs"),
    ({"queue": "tpu"}, "queue"),
    ({"queue": "gpu"}, "queue"),  # the base has no GPU id
    ({"warmup": 3}, "warmup"),
])
def test_bad_settings_are_refused_naming_the_field(base, annotated_dataset, settings, field):
    with pytest.raises(FineTuneRefused) as refused:
        finetune.create_job(base, annotated_dataset, **settings)
    assert refused.value.field == field
    assert not FineTuneJob.objects.exists()


def test_cli_exports_creates_shows_lists_and_cancels(base, annotated_dataset):
    # given: a second version through the CLI
    out = StringIO()
    call_command("finetune", "dataset", "e2e", "--filters", '{"tag": "gold"}', stdout=out)
    assert "e2e v2" in out.getvalue() and "1 lines" in out.getvalue()
    # when
    out = StringIO()
    call_command("finetune", "create", "--base", "tiny", "--dataset", "e2e@1", "--rank", "4",
                 "--max-steps", "3", "--json", stdout=out)
    created = json.loads(out.getvalue())
    # then
    assert (created["status"], created["dataset"], created["lora"]["rank"]) == (
        "queued", "e2e v1", 4)
    out = StringIO()
    call_command("finetune", "status", str(created["id"]), stdout=out)
    assert "0/? loss — queued" in out.getvalue()
    out = StringIO()
    call_command("finetune", "cancel", str(created["id"]), stdout=out)
    assert out.getvalue().strip() == f"{created['id']}: cancelled"
    out = StringIO()
    call_command("finetune", "list", stdout=out)
    assert "tiny" in out.getvalue() and "cancelled" in out.getvalue()


@pytest.mark.parametrize(("argv", "message"), [
    (["create", "--base", "nope", "--dataset", "e2e"], "no transformers endpoint"),
    (["create", "--base", "tiny", "--dataset", "e2e@9"], "no dataset"),
    (["create", "--base", "tiny", "--dataset", "e2e", "--rank", "0"], "lora_rank"),
    (["dataset", "x", "--filters", "{bad"], "not valid JSON"),
    (["status", "999999"], "no fine-tuning job"),
])
def test_cli_refuses_bad_input_with_one_clear_line(base, annotated_dataset, argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("finetune", *argv)


def test_admin_adds_a_job_and_refuses_bad_settings(base, annotated_dataset):
    admin = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    form = {"base_endpoint": base.pk, "dataset": annotated_dataset.pk, "suffix": "",
            "lora_rank": 0, "lora_alpha": 16, "learning_rate": 0.001, "epochs": 1,
            "max_steps": 2, "queue": "cpu"}
    refused = client.post("/admin/jobs/finetunejob/add/", form)
    assert refused.status_code == 200 and "must be between 1 and 256" in refused.text
    on_gpu = client.post("/admin/jobs/finetunejob/add/", {**form, "lora_rank": 4,
                                                              "queue": "gpu"})
    assert on_gpu.status_code == 200 and "needs a base model with a GPU id" in on_gpu.text
    form["lora_rank"] = 4
    added = client.post("/admin/jobs/finetunejob/add/", form)
    assert added.status_code == 302, added.text
    job = FineTuneJob.objects.get()
    assert (job.lora_rank, job.created_by, job.status) == (4, admin, "queued")
    finetune.cancel_job(job)  # no worker here: leave nothing to run
    page = client.get(f"/admin/jobs/finetunejob/{job.pk}/change/")
    assert page.status_code == 200 and "No step yet." in page.text


def test_redelivered_task_skips_a_job_still_beating_and_retrains_a_stale_one(
        base, annotated_dataset, tmp_path, settings):
    # given: a job some other worker is running, its progress written just now
    settings.OPENCLAW_FINETUNE_DIR = tmp_path / "ft"
    job = FineTuneJob.objects.create(base_endpoint=base, dataset=annotated_dataset,
                                     max_steps=3, status=FineTuneStatus.RUNNING,
                                     heartbeat_at=timezone.now(), step=2)
    # when / then: a second delivery leaves it alone
    finetune.run_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.step) == (FineTuneStatus.RUNNING, 2)
    # a job whose worker died long ago trains again from the start
    FineTuneJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(hours=1))
    finetune.run_job(job.pk)
    job.refresh_from_db()
    assert (job.status, job.step, len(job.losses)) == (FineTuneStatus.SUCCEEDED, 3, 3)


def test_a_model_folder_without_weights_fails_the_job_with_the_reason(
        base, annotated_dataset, tmp_path, settings):
    settings.OPENCLAW_FINETUNE_DIR = tmp_path / "ft"
    broken = tmp_path / "broken"
    shutil.copytree(base.model_path, broken)
    (broken / "model.safetensors").unlink()
    base.model_path = str(broken)
    base.save()
    job = FineTuneJob.objects.create(base_endpoint=base, dataset=annotated_dataset,
                                     max_steps=3)
    finetune.run_job(job.pk)
    job.refresh_from_db()
    assert job.status == FineTuneStatus.FAILED and job.finished_at is not None
    assert "OSError" in job.error and job.result_endpoint is None
