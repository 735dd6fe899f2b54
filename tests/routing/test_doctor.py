"""`openclaw doctor`: on this machine it says "no GPU" plainly and checks a remote
endpoint end to end (the loopback OpenAI-compatible server)."""

import shutil
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from routing.models import ModelEndpoint

pytestmark = pytest.mark.django_db


def run_doctor(*args) -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("doctor", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a GPU")
def test_doctor_reports_no_gpu_and_checks_a_remote_endpoint(openai_server):
    ModelEndpoint.objects.create(name="remote", engine="openai", endpoint_url=openai_server.url)

    output, error = run_doctor("remote")

    assert "[warn] GPU: no GPU: nvidia-smi not found" in output
    assert f"[  ok] model remote endpoint: {openai_server.url} reachable" in output
    assert "[  ok] model remote one-token generation: answered" in output
    assert error is None
    assert ModelEndpoint.objects.get(name="remote").health == "healthy"


def test_doctor_fails_with_advice_for_an_unreachable_endpoint_and_a_missing_folder():
    ModelEndpoint.objects.create(name="gone", engine="openai",
                                 endpoint_url="http://127.0.0.1:1/v1")
    ModelEndpoint.objects.create(name="trt", engine="tensorrt_llm",
                                 model_path="/nowhere/engine", gpu_id=0)

    output, error = run_doctor()

    assert "[FAIL] model gone endpoint: cannot connect to 127.0.0.1:1" in output
    assert "check the URL and that the server runs" in output
    assert "[FAIL] model trt folder: folder /nowhere/engine does not exist" in output
    assert "[FAIL] package tensorrt_llm: not installed but a registered model uses " \
           "tensorrt_llm: pip install -e '.[gpu]'" in output
    assert error is not None and "check(s) failed" in str(error)


def test_doctor_for_an_unknown_model_says_how_to_list_them():
    output, error = run_doctor("nope")
    assert "not in the registry (see `openclaw models list`)" in output
    assert error is not None
