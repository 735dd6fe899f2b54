"""The Celery application: configured from Django settings (``CELERY_*``), tasks
found in each app's ``tasks.py``.

Beat's housekeeping (``CELERY_BEAT_SCHEDULE``: due workflow schedules every 15 s,
stalled jobs every 10 s, key rotation) is logged at DEBUG rather than INFO: beat's
"Sending due task" and a worker's "received" and "succeeded" for every tick would
otherwise be most of what ``openclaw up`` prints. Those tasks' failures, retries and
own warnings keep their level; ``OPENCLAW_LOG_LEVEL=DEBUG`` shows the ticks again.
"""

import logging
import os

from celery import Celery
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS

from core.logging import DemoteToDebug

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")

app = Celery("openclaw")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

BEAT_SENDING = "Scheduler: Sending due task %s (%s)"  # celery.beat's line per tick


def is_tick(record: logging.LogRecord) -> bool:
    """A routine line about a task of the beat schedule: beat sending it, a worker
    receiving it or finishing it well."""
    if record.msg == BEAT_SENDING and isinstance(record.args, tuple) and len(record.args) == 2:
        task = record.args[1]
    elif record.msg in (LOG_RECEIVED, LOG_SUCCESS):
        task = (getattr(record, "data", None) or {}).get("name")
    else:
        return False
    return task in {entry["task"] for entry in app.conf.beat_schedule.values()}


for _name in ("celery.beat", "celery.worker.strategy", "celery.app.trace"):
    logging.getLogger(_name).addFilter(DemoteToDebug(is_tick))
