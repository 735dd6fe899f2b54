"""The registry in the Django admin: validation that explains itself, the key
never shown back, and the one-token "test connection" action."""

import pytest
from django.contrib.messages import get_messages

from routing.models import ModelEndpoint
from routing.services import endpoint_config

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/routing/modelendpoint/add/"


def form_data(**overrides) -> dict:
    data = {
        "name": "m1", "display_name_en": "", "display_name_zh_hans": "",
        "description_en": "", "description_zh_hans": "", "engine": "openai",
        "enabled": "on", "endpoint_url": "", "upstream_model": "", "api_key": "",
        "model_path": "", "gpu_id": "", "context_window": "4096", "max_output_tokens": "256",
        "weight": "1", "max_batch": "8", "default_params": "{}", "connect_timeout": "5",
        "first_byte_timeout": "30", "total_timeout": "120",
    }
    data.update(overrides)
    return data


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_missing_local_path_is_an_error_naming_the_folder(admin_client):
    response = admin_client.post(ADD_URL, form_data(engine="transformers",
                                                    model_path="/nowhere/tiny-llama"))

    assert response.status_code == 200
    assert "/nowhere/tiny-llama does not exist on this machine" in response.content.decode()
    assert not ModelEndpoint.objects.exists()


def test_local_folder_without_weights_says_what_is_missing(admin_client, tmp_path):
    (tmp_path / "config.json").write_text("{}")

    response = admin_client.post(ADD_URL, form_data(engine="transformers",
                                                    model_path=str(tmp_path)))

    page = response.content.decode()
    assert "no weights (*.safetensors, *.bin)" in page
    assert "no tokenizer files" in page


def test_unreachable_url_is_saved_with_a_warning(admin_client):
    response = admin_client.post(ADD_URL, form_data(endpoint_url="http://127.0.0.1:1/v1"),
                                 follow=True)

    assert ModelEndpoint.objects.filter(name="m1").exists()
    assert any("unreachable" in m for m in messages_of(response))


def test_bad_default_params_and_missing_url_are_explained(admin_client):
    response = admin_client.post(ADD_URL, form_data(default_params='{"temperature": 9}'))

    page = response.content.decode()
    assert "“temperature” must be a number 0.0–2.0" in page
    assert "An openai endpoint needs its URL." in page


def test_api_key_is_write_only_kept_when_blank_and_clearable(admin_client):
    admin_client.post(ADD_URL, form_data(endpoint_url="http://127.0.0.1:1/v1",
                                         api_key="sk-admin-secret-12345678"))
    endpoint = ModelEndpoint.objects.get(name="m1")
    change_url = f"/admin/routing/modelendpoint/{endpoint.pk}/change/"

    page = admin_client.get(change_url).content.decode()
    assert "sk-admin-secret-12345678" not in page
    assert "sk-…5678" in page

    admin_client.post(change_url, form_data(endpoint_url="http://127.0.0.1:1/v1", weight="5"))
    endpoint.refresh_from_db()
    assert (endpoint.weight, endpoint.api_key) == (5, "sk-admin-secret-12345678")

    admin_client.post(change_url, form_data(endpoint_url="http://127.0.0.1:1/v1",
                                            clear_api_key="on"))
    endpoint.refresh_from_db()
    assert endpoint.api_key == ""


def test_test_connection_action_reports_and_records_health(admin_client):
    echo = ModelEndpoint.objects.create(name="echo", engine="echo")
    dead = ModelEndpoint.objects.create(name="dead", engine="openai",
                                        endpoint_url="http://127.0.0.1:1/v1")

    response = admin_client.post("/admin/routing/modelendpoint/", {
        "action": "test_connection", "_selected_action": [echo.pk, dead.pk]}, follow=True)

    texts = messages_of(response)
    assert any("echo" in t and "answered 'Say '" in t for t in texts), texts
    assert any("dead" in t and "connection_error" in t for t in texts), texts
    echo.refresh_from_db()
    dead.refresh_from_db()
    assert (echo.health, dead.health) == ("healthy", "unhealthy")
    assert dead.health_checked_at is not None


def test_tool_format_is_edited_next_to_the_local_fields_and_reaches_the_engine(admin_client):
    endpoint = ModelEndpoint.objects.create(name="qwen", engine="transformers",
                                            model_path="/models/qwen", tool_format="hermes")
    change_url = f"/admin/routing/modelendpoint/{endpoint.pk}/change/"

    page = admin_client.get(change_url).content.decode()
    refused = admin_client.post(change_url, form_data(
        name="qwen", engine="openai", endpoint_url="http://127.0.0.1:1/v1", tool_format="xml"))

    assert page.index('name="gpu_id"') < page.index('name="tool_format"')
    assert '<option value="hermes" selected>' in page
    assert "how tool calls are read out of the text" in page
    assert "Select a valid choice" in refused.content.decode()
    assert endpoint_config(endpoint).tool_format == "hermes"
