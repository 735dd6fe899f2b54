"""``openclaw finetune dataset|create|status|cancel|list``: datasets and LoRA
fine-tuning jobs from the command line.

``dataset NAME [--filters JSON] [--include-flagged]`` exports the next version of a
dataset; ``create --base MODEL --dataset NAME[@VERSION] [--wait]`` queues a job and
``status ID --watch`` follows it (step, loss, status) until it ends.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from inference.kinds import EngineKind
from jobs import datasets, finetune
from jobs.datasets import DatasetRefused
from jobs.finetune import FineTuneRefused
from jobs.models import Dataset, FineTuneJob, FineTuneQueue
from jobs.progress import follow
from routing.models import ModelEndpoint


class Command(BaseCommand):
    help = "Export datasets; create, follow, cancel and list fine-tuning jobs."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        dataset = sub.add_parser("dataset", help="export conversations as a dataset")
        dataset.add_argument("name")
        dataset.add_argument("--filters", default="{}",
                             help=f"JSON object; keys: {', '.join(datasets.FILTER_KEYS)}")
        dataset.add_argument("--include-flagged", action="store_true",
                             help="keep conversations with personal data or secrets")
        create = sub.add_parser("create", help="queue a LoRA fine-tuning job")
        create.add_argument("--base", required=True,
                            help="base model: a transformers endpoint's name or id")
        create.add_argument("--dataset", required=True, help="NAME, NAME@VERSION or id")
        create.add_argument("--rank", type=int, dest="lora_rank")
        create.add_argument("--alpha", type=int, dest="lora_alpha")
        create.add_argument("--lr", type=float, dest="learning_rate")
        create.add_argument("--epochs", type=int)
        create.add_argument("--max-steps", type=int)
        create.add_argument("--queue", choices=FineTuneQueue.values)
        create.add_argument("--suffix")
        create.add_argument("--wait", action="store_true", help="follow it to the end")
        create.add_argument("--json", action="store_true")
        status = sub.add_parser("status", help="progress and loss of a job")
        status.add_argument("id", type=int)
        status.add_argument("--watch", action="store_true", help="follow it to the end")
        status.add_argument("--json", action="store_true")
        sub.add_parser("cancel", help="stop a job").add_argument("id", type=int)
        listing = sub.add_parser("list", help="recent jobs")
        listing.add_argument("--limit", type=int, default=20)

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except (DatasetRefused, FineTuneRefused) as exc:
            raise CommandError(exc.message) from None

    def _dataset(self, name, filters, include_flagged, **_options):
        try:
            parsed = json.loads(filters)
        except json.JSONDecodeError as exc:
            raise CommandError(_("--filters is not valid JSON: %(error)s")
                               % {"error": exc}) from None
        dataset = datasets.export_dataset(name, parsed, include_flagged=include_flagged)
        self.stdout.write(_("%(dataset)s (id %(id)d): %(lines)d lines, %(excluded)d "
                            "conversations left out as flagged, sha256 %(hash)s")
                          % {"dataset": dataset, "id": dataset.pk,
                             "lines": dataset.line_count, "excluded": dataset.excluded_count,
                             "hash": dataset.sha256})

    def _create(self, base, dataset, wait, json, **options):
        settings_ = {key: options[key] for key in (*finetune.LIMITS, "queue", "suffix")
                     if options.get(key) is not None}
        job = finetune.create_job(_base(base), _dataset(dataset), **settings_)
        if json:
            self.stdout.write(_json(finetune.job_dict(job)))
        else:
            self.stdout.write(_("queued fine-tuning job %(id)d on queue %(queue)s")
                              % {"id": job.pk, "queue": job.queue})
        if wait:
            self._follow(job.pk)

    def _status(self, id, watch, json, **_options):
        job = self._follow(id) if watch else _job(id)
        if json:
            self.stdout.write(_json(finetune.job_dict(job)))
        else:
            self.stdout.write(f"{job.pk}  {job.progress_line()}")

    def _cancel(self, id, **_options):
        job = finetune.cancel_job(_job(id))
        message = _("%(id)d: cancelled") if job.finished else \
            _("%(id)d: cancel requested; it stops at its next step")
        self.stdout.write(message % {"id": job.pk})

    def _list(self, limit, **_options):
        for job in FineTuneJob.objects.select_related("base_endpoint", "result_endpoint") \
                .order_by("-created_at")[:limit]:
            self.stdout.write(f"{job.pk}  {job.created_at:%Y-%m-%d %H:%M}  "
                              f"{job.base_endpoint.name}  "
                              f"{job.progress_line(width=20)}")

    def _follow(self, job_id) -> FineTuneJob:
        """Redraw the progress line until the job ends (on one line when a terminal)."""
        return follow(lambda: _job(job_id), self.stderr)


def _base(value: str) -> ModelEndpoint:
    endpoints = ModelEndpoint.objects.filter(engine=EngineKind.TRANSFORMERS)
    found = list(endpoints.filter(pk=int(value)) if value.isdigit() else
                 endpoints.filter(name=value))
    if not found:
        raise CommandError(_("--base: no transformers endpoint %(value)r (openclaw models "
                             "list)") % {"value": value})
    if len(found) > 1:
        raise CommandError(_("--base: %(value)r has %(count)d instances; give an id: "
                             "%(ids)s") % {"value": value, "count": len(found),
                                           "ids": ", ".join(str(e.pk) for e in found)})
    return found[0]


def _dataset(value: str) -> Dataset:
    if value.isdigit():
        dataset = Dataset.objects.filter(pk=int(value)).first()
    else:
        name, _sep, version = value.partition("@")
        queryset = Dataset.objects.filter(name=name)
        if version:
            if not version.isdigit():
                raise CommandError(_("--dataset: the version after @ is a number"))
            queryset = queryset.filter(version=int(version))
        dataset = queryset.order_by("-version").first()
    if dataset is None:
        raise CommandError(_("--dataset: no dataset %(value)r (openclaw finetune dataset "
                             "NAME exports one)") % {"value": value})
    return dataset


def _job(job_id: int) -> FineTuneJob:
    job = FineTuneJob.objects.select_related("base_endpoint", "dataset", "result_endpoint") \
        .filter(pk=job_id).first()
    if job is None:
        raise CommandError(_("no fine-tuning job %(id)r (openclaw finetune list)")
                           % {"id": job_id})
    return job


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
