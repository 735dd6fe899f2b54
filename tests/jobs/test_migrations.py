"""An existing install upgrades: the batch, annotation, dataset and fine-tuning models
moved from ``inference`` to ``jobs`` (curated pairs to ``chat``) keep their rows, their
ids and their permissions, through the real migrations on the test database."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from chat.models import QAPair
from jobs.models import BatchFile, BatchJob

BEFORE_THE_MOVE = [("inference", "0002_finetune"), ("chat", "0004_user_language")]


def migrate(targets: list[tuple[str, str | None]]) -> None:
    MigrationExecutor(connection).migrate(targets)


def latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.fixture
def upgraded_at_the_end():
    """Whatever happens, the test database is left at the latest migrations."""
    yield
    migrate(latest())


@pytest.mark.django_db(transaction=True)
def test_rows_ids_and_permissions_survive_the_move_out_of_inference(upgraded_at_the_end):
    # given: the schema and rows of an install from before the move
    migrate([*BEFORE_THE_MOVE, ("jobs", None)])
    old = MigrationExecutor(connection).loader.project_state(BEFORE_THE_MOVE).apps
    try:
        upload = old.get_model("inference", "BatchFile").objects.create(
            id="file-kept", purpose="batch", filename="in.jsonl", content=b"{}", bytes=2)
        old.get_model("inference", "BatchJob").objects.create(id="batch_kept",
                                                              input_file=upload)
        old.get_model("inference", "QAPair").objects.create(question="q?", answer="a.")
        job_type = ContentType.objects.get(app_label="inference", model="batchjob")
        viewers = Group.objects.create(name="job viewers")
        viewers.permissions.add(Permission.objects.get(content_type=job_type,
                                                       codename="view_batchjob"))
    finally:
        # when: it upgrades
        migrate(latest())
    ContentType.objects.clear_cache()

    # then: the rows are there under their new apps, with their ids
    assert BatchJob.objects.get().pk == "batch_kept"
    assert BatchFile.objects.get().pk == "file-kept"
    assert QAPair.objects.get().question == "q?"
    with connection.cursor() as cursor:
        tables = set(connection.introspection.table_names(cursor))
    assert {"jobs_batchjob", "chat_qapair"} <= tables
    assert not {t for t in tables if t.startswith("inference_")}
    # and the group's permission now names jobs.BatchJob (same content type row)
    granted = viewers.permissions.get()
    assert granted.content_type_id == job_type.pk
    assert (granted.content_type.app_label, granted.codename) == ("jobs", "view_batchjob")
