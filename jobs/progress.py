"""Following a job from the command line: its progress line redrawn until it ends
(``openclaw batch submit --wait``, ``batch status --watch``, ``finetune … --watch``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from .models import Job

J = TypeVar("J", bound=Job)

POLL_S = 0.5


def follow(load: Callable[[], J], stream: Any, poll_s: float = POLL_S,
           line: Callable[[J], str] | None = None) -> J:
    """Redraw ``load()``'s progress line (``line(job)``, else ``job.progress_line()``) on
    ``stream`` (a Django command's ``stderr``) until the job ends — in place on a
    terminal, one line per change otherwise — and return the finished job."""
    tty = stream.isatty()
    last = ""
    while True:
        job = load()
        text = line(job) if line else job.progress_line()
        if text != last:
            stream.write(f"\r{text}" if tty else text, ending="" if tty else "\n")
            stream.flush()
            last = text
        if job.finished:
            if tty:
                stream.write("")
            return job
        time.sleep(poll_s)
