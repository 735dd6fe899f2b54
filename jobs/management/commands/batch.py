"""``openclaw batch submit|status|results|cancel|retry|list``: batch jobs from the
command line (OpenAI batch JSONL: ``custom_id``, ``method``, ``url``, ``body``).

``submit FILE --model M --wait`` and ``status ID --watch`` draw a progress bar
(done/failed/total, lines/s, ETA) until the job ends; ``--wait`` then says what
``status`` says: the counts, the invalid input lines (numbered, with the reason, never
run) and the status, in the user's language.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from jobs import batch, batch_files, batch_wire
from jobs.batch import BatchRefused
from jobs.models import BatchFile, BatchJob
from jobs.progress import follow
from routing.key_models import ApiKey


class Command(BaseCommand):
    help = "Submit, follow, fetch, cancel and retry batch jobs."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        submit = sub.add_parser("submit", help="run a JSONL file of requests")
        submit.add_argument("file", help="OpenAI batch JSONL (custom_id, method, url, body)")
        submit.add_argument("--model", default="",
                            help="send every line to this model (replaces each line's model)")
        submit.add_argument("--key", default="",
                            help="API key prefix whose scope and limits the lines respect")
        submit.add_argument("--chunk-size", type=int, help="lines per Celery task")
        submit.add_argument("--wait", action="store_true", help="follow it to the end")
        submit.add_argument("--json", action="store_true")
        status = sub.add_parser("status", help="progress of a job")
        status.add_argument("id")
        status.add_argument("--watch", action="store_true", help="follow it to the end")
        status.add_argument("--json", action="store_true")
        results = sub.add_parser("results", help="the results JSONL (custom_id order)")
        results.add_argument("id")
        results.add_argument("--errors", action="store_true", help="the errors JSONL instead")
        results.add_argument("-o", "--output", help="write to this file instead of stdout")
        for name, text in (("cancel", "stop a job (lines not yet run are cancelled)"),
                           ("retry", "run a finished job's failed lines again")):
            sub.add_parser(name, help=text).add_argument("id")
        listing = sub.add_parser("list", help="recent jobs")
        listing.add_argument("--limit", type=int, default=20)

    def handle(self, *args, action, **options):
        try:
            getattr(self, f"_{action}")(**options)
        except BatchRefused as exc:
            raise CommandError(exc.message) from None

    def _submit(self, file, model, key, chunk_size, wait, json, **_options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(_("%(file)s: no such file") % {"file": file})
        api_key = None
        if key:
            api_key = ApiKey.objects.filter(prefix=key.split(".", 1)[0]).first()
            if api_key is None:
                raise CommandError(_("--key: no API key with prefix %(prefix)r (openclaw keys "
                                     "list)") % {"prefix": key})
        upload = batch_files.create_file(path.read_bytes(), path.name, owner=api_key.family
                                   if api_key else "")
        job = batch.create_job(upload, model=model, api_key=api_key, chunk_size=chunk_size)
        if not json:
            self.stdout.write(_("submitted %(id)s (%(file)s, %(bytes)d bytes)")
                              % {"id": job.pk, "file": path.name, "bytes": upload.bytes})
        if wait:
            job = self._follow(job.pk)
        if json:  # one document: the job as it ended (--wait) or as it starts
            self.stdout.write(_json(batch_wire.batch_object(job)))
        elif wait:
            self._report(job)

    def _status(self, id, watch, json, **_options):
        job = self._job(id)
        if watch:
            job = self._follow(job.pk)
        if json:
            self.stdout.write(_json(batch_wire.batch_object(job)))
            return
        self._report(job)

    def _report(self, job: BatchJob) -> None:
        """The job's line, then its invalid input lines: numbered, with the reason."""
        self.stdout.write(f"{job.pk}  {progress_line(job)}")
        for problem in job.validation_errors[:20]:
            self.stdout.write(_("  line %(line)s: %(message)s") % problem)
        if len(job.validation_errors) > 20:
            self.stdout.write(_("  … %(more)d more invalid lines (openclaw batch results "
                                "%(id)s --errors)") % {"more": len(job.validation_errors) - 20,
                                                       "id": job.pk})

    def _results(self, id, errors, output, **_options):
        job = self._job(id)
        file_id = job.error_file_id if errors else job.output_file_id
        if not file_id:
            problem = (_("%(id)s has no error file yet (status %(status)s)") if errors else
                       _("%(id)s has no result file yet (status %(status)s)"))
            raise CommandError(problem % {"id": job.pk, "status": job.get_status_display()})
        content = batch_files.file_content(BatchFile.objects.get(pk=file_id))
        if output:
            Path(output).write_bytes(content)
            self.stderr.write(_("wrote %(file)s (%(bytes)d bytes)") % {"file": output,
                                                                        "bytes": len(content)})
        else:
            self.stdout.write(content.decode(), ending="")

    def _cancel(self, id, **_options):
        job = batch.cancel_job(self._job(id))
        self.stdout.write(_("%(id)s: %(status)s (%(done)d done, %(failed)d failed)")
                          % {"id": job.pk, "status": job.get_status_display(), "done": job.done,
                             "failed": job.failed})

    def _retry(self, id, **_options):
        count = batch.retry_job(self._job(id))
        self.stdout.write(_("%(id)s: %(count)d failed line(s) queued again") % {"id": id,
                                                                                 "count": count}
                          if count else _("%(id)s: no failed line to retry") % {"id": id})

    def _list(self, limit, **_options):
        for job in BatchJob.objects.order_by("-created_at")[:limit]:
            self.stdout.write(f"{job.pk}  {job.created_at:%Y-%m-%d %H:%M}  "
                              f"{progress_line(job, width=20)}")

    def _follow(self, job_id) -> BatchJob:
        """Redraw the progress line until the job ends (on one line when a terminal)."""
        return follow(lambda: self._job(job_id), self.stderr, line=progress_line)

    def _job(self, job_id: str) -> BatchJob:
        job = BatchJob.objects.filter(pk=job_id).first()
        if job is None:
            raise CommandError(_("no batch job %(id)r (openclaw batch list)") % {"id": job_id})
        return job


def progress_line(job: BatchJob, width: int = 30) -> str:
    """``[#####-----] 512/1000 ok · 3 failed · 1 invalid line · 120 lines/s · ETA 4 s ·
    in progress``: the model's ``progress_line`` in the user's language, the invalid
    input lines (never run, so not in ``total``) counted, the status by its label."""
    filled = round(width * job.progress)
    parts = [f"[{'#' * filled}{'-' * (width - filled)}] "
             + _("%(done)d/%(total)d ok") % {"done": job.done, "total": job.total},
             _("%(failed)d failed") % {"failed": job.failed}]
    if invalid := len(job.validation_errors):
        parts.append(ngettext("%(count)d invalid line", "%(count)d invalid lines", invalid)
                     % {"count": invalid})
    if rate := job.rate():
        parts.append(_("%(rate).0f lines/s") % {"rate": rate})
    if (eta := job.eta_seconds()) is not None:
        parts.append(_("ETA %(seconds).0f s") % {"seconds": eta})
    parts.append(str(job.get_status_display()))
    return " · ".join(parts)


def _json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)

