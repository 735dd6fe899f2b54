"""The studio's Jobs page with Django's test client: staff with the jobs' permissions
only, batch and fine-tuning jobs listed with their progress, cancel from the page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from jobs import batch, batch_files
from jobs.models import BatchStatus, LineStatus
from tests.grants import grant

pytestmark = pytest.mark.django_db

LINES = b"\n".join(
    b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", '
    b'"body": {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}}' % i
    for i in range(4))


@pytest.fixture
def staff(client):
    user = get_user_model().objects.create_user("sam", password="pw-sam-123", is_staff=True)
    user = grant(user, "jobs.view_batchjob", "jobs.change_batchjob", "jobs.view_finetunejob")
    client.force_login(user)
    return user


def test_the_page_is_for_staff_with_the_jobs_permissions_only(client):
    get_user_model().objects.create_user("ann", password="pw-ann-123")
    client.login(username="ann", password="pw-ann-123")

    assert client.get("/studio/jobs/").status_code == 403
    assert client.get("/studio/api/jobs/").json()["error"]["message"] == \
        "Only staff may do this."
    get_user_model().objects.create_user("bea", password="pw-bea-123", is_staff=True)
    client.login(username="bea", password="pw-bea-123")  # staff, no permission
    assert client.get("/studio/jobs/").status_code == 403
    assert client.get("/studio/api/jobs/").status_code == 403
    client.logout()
    assert client.get("/studio/jobs/").status_code == 302  # to the studio's sign-in
    assert client.get("/studio/api/jobs/").status_code == 401


def test_jobs_are_listed_with_progress_and_cancelled_from_the_page(client, staff):
    job = batch.create_job(batch_files.create_file(LINES, "in.jsonl"), model="echo")
    batch.start_job(job.pk)  # the worker's first step: lines validated, chunks queued
    job.lines.filter(custom_id="r0").update(status=LineStatus.SUCCEEDED)
    batch.update_counts(job.pk)

    page = client.get("/studio/jobs/")
    listed = client.get("/studio/api/jobs/").json()
    cancelled = client.post(f"/studio/api/jobs/batch/{job.pk}/cancel/")
    again = client.post(f"/studio/api/jobs/batch/{job.pk}/cancel/")
    missing = client.post("/studio/api/jobs/batch/batch_nope/cancel/")

    assert page.status_code == 200 and "studio/jobs.js" in page.content.decode()
    row = listed["batches"][0]
    assert (row["id"], row["total"], row["done"], row["failed"]) == (job.pk, 4, 1, 0)
    assert listed["finetunes"] == []
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] in (BatchStatus.CANCELLING, BatchStatus.CANCELLED)
    assert again.status_code == 200  # cancelling twice is not an error
    assert missing.status_code == 404
