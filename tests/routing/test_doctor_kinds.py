"""`openclaw doctor` tries each model with the call its kind answers: the demo
registry of a fresh install (echo + the bundled all-MiniLM-L6-v2 embedding model) and
no GPU is warnings at most, so it exits 0; an embedding model that cannot load fails
its line with the reason. Its labels and statuses follow the active language."""

from __future__ import annotations

import shutil

import pytest
from django.core.management import call_command
from django.utils import translation
from django.utils.translation import gettext

from routing.doctor import run_doctor
from routing.models import ModelEndpoint
from tests.routing.test_doctor import run_doctor as doctor

pytestmark = pytest.mark.django_db

FRESH_INSTALL = ["fixtures/10_models.json", "fixtures/30_embedding.json"]


def test_a_fresh_install_passes_with_the_embedding_model_embedding_one_text():
    # given: the demo registry `openclaw up` loads on first start
    call_command("loaddata", *FRESH_INSTALL, verbosity=0)
    engines = set(ModelEndpoint.objects.values_list("engine", flat=True))
    assert {"echo", "embedding"} <= engines

    # when
    output, error = doctor()

    # then
    assert error is None, output
    assert "[  ok] model all-minilm-l6-v2 embedding of one text: a vector of 384 " \
           "dimensions in " in output
    assert "all-minilm-l6-v2 one-token generation" not in output
    assert "[  ok] model echo one-token generation: answered" in output
    assert "[FAIL]" not in output
    assert output.rstrip().splitlines()[-1].startswith("all checks passed")
    assert ModelEndpoint.objects.get(name="all-minilm-l6-v2").health == "healthy"


def test_an_embedding_model_that_cannot_load_fails_with_the_reason():
    ModelEndpoint.objects.create(name="vectors", engine="embedding",
                                 model_path="/nowhere/minilm")

    output, error = doctor("vectors")

    assert "[FAIL] model vectors embedding of one text: " in output
    assert error is not None and "1 check(s) failed" in str(error)
    endpoint = ModelEndpoint.objects.get(name="vectors")
    assert endpoint.health == "unhealthy" and endpoint.health_detail


NO_GPU = ("no GPU: nvidia-smi not found. GPU engines (tensorrt_llm) cannot run on this "
          "machine; remote and CPU engines can")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_doctor_speaks_the_active_language():
    ModelEndpoint.objects.create(name="echo", engine="echo")

    with translation.override("zh-hans"):
        lines = [check.line() for check in run_doctor("echo")]
        advice = gettext(NO_GPU)

    assert advice != NO_GPU  # the catalogue has it in Chinese
    assert lines[0].endswith(f": {advice}")
