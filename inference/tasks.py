"""Celery tasks of the inference app."""

import os
import socket
import time

from celery import shared_task


@shared_task(name="inference.ping")
def ping(sent_at: float) -> dict:
    """Answer with who ran the task: the readiness round trip and worker checks."""
    return {
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "sent_at": sent_at,
        "received_at": time.time(),
    }
