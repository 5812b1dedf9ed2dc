"""The `maas` CLI against the running platform: login, model square, models from a local folder, errors."""
from __future__ import annotations

import json

import pytest

from services.lib.mlkit.tiny import build_tiny_model
from tests.integration.cli_helpers import Maas

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def maas(running_platform, tmp_path_factory) -> Maas:
    cli = Maas(running_platform["url"], tmp_path_factory.mktemp("cli-config"))
    admin = running_platform["admin"]
    result = await cli("login", "--username", admin.username, "--password", admin.password)
    assert result.code == 0, result.err
    return cli


async def test_login_stores_the_token_and_whoami_uses_it(maas, running_platform):
    stored = json.loads((__import__("pathlib").Path(maas.env["MAAS_CONFIG_DIR"]) / "cli.json").read_text())
    assert stored["url"] == running_platform["url"] and stored["token"].startswith("maas-")
    me = (await maas("whoami", "--json")).json()
    assert me["username"] == running_platform["admin"].username and me["default_bucket"].startswith("maas-")
    wrong = await maas("login", "-u", "admin", "-p", "not-the-password")
    assert wrong.code == 1 and "wrong username or password" in wrong.err
    assert "check the username and password" in wrong.err and "log in again" not in wrong.err
    revoked = await maas("models", "list", env={"MAAS_TOKEN": "maas-not-a-token"})
    assert revoked.code == 1 and "invalid or revoked token" in revoked.err and "maas login" in revoked.err


async def test_model_square_listing_and_detail(maas):
    lora = (await maas("templates", "list", "--task", "lora", "--json")).json()
    assert lora["total"] > 5 and all("lora" in t["tasks"]["tune"] for t in lora["items"])
    shown = await maas("templates", "show", "baichuan2-7b")
    assert shown.code == 0 and "Baichuan2-7B" in shown.out and "can only be deployed" in shown.out
    missing = await maas("templates", "show", "no-such-template")
    assert missing.code == 1 and "no-such-template" in missing.err


async def test_create_from_a_local_folder_then_delete_with_DELETE(maas, tmp_path):
    folder = build_tiny_model(tmp_path / "tiny")
    created = await maas("models", "create", "cli-tiny", "--template", "qwen2-custom", "--weights", str(folder),
                         "--description", "from the CLI")
    assert created.code == 0, created.err
    assert "tiny (6 files)" in created.err and "created" in created.out  # upload progress, then the outcome
    model = (await maas("models", "show", "cli-tiny", "--json")).json()
    assert model["status"] == "created" and model["description"] == "from the CLI"

    listed = (await maas("models", "list", "--json")).json()
    assert "cli-tiny" in [m["name"] for m in listed["items"]]
    version = (await maas("models", "version", "cli-tiny", "1", "--json")).json()
    [task] = version["tasks"]
    assert task["kind"] == "weight_validation" and task["status"] == "succeeded"
    me = (await maas("whoami", "--json")).json()
    uploads = (await maas("storage", "ls", f"{me['default_bucket']}/uploads", "--json")).json()
    assert any("cli-tiny-" in item["path"] for item in uploads["items"])

    # Same name again: refused before anything is uploaded, naming the field.
    again = await maas("models", "create", "cli-tiny", "-t", "qwen2-custom", "-w", str(folder))
    assert again.code == 1 and "already exists" in again.err and "field: name" in again.err

    kept = await maas("models", "delete", "cli-tiny", input="delete\n")
    assert kept.code == 1 and "not deleted" in kept.err
    assert (await maas("models", "show", "cli-tiny", "--json")).code == 0
    deleted = await maas("models", "delete", "cli-tiny", input="DELETE\n")
    assert deleted.code == 0, deleted.err
    gone = await maas("models", "show", "cli-tiny")
    assert gone.code == 1 and "does not exist" in gone.err


async def test_bad_input_prints_the_apis_message_and_field(maas, tmp_path):
    folder = build_tiny_model(tmp_path / "tiny")
    bad_template = await maas("models", "create", "cli-bad", "-t", "no-such-template", "-w", str(folder))
    assert bad_template.code == 1
    assert "HTTP 400" in bad_template.err and "field: template_id" in bad_template.err
    bad_name = await maas("models", "create", "9-starts-with-a-digit", "-t", "qwen2-custom", "-w", str(folder))
    assert bad_name.code == 1 and "start with a letter" in bad_name.err and "field: name" in bad_name.err
    not_hf = tmp_path / "not-a-model"
    not_hf.mkdir()
    (not_hf / "notes.txt").write_text("no weights here")
    not_model = await maas("models", "create", "cli-not-hf", "-t", "qwen2-custom", "-w", str(not_hf))
    assert not_model.code == 1 and "Hugging Face" in not_model.err and "field: weights_path" in not_model.err
    # A path meant as a local folder that is not there, and a path that is neither a folder nor a bucket.
    missing = await maas("models", "create", "cli-missing", "-t", "qwen2-custom", "-w", str(tmp_path / "nope"))
    assert missing.code == 1 and f"no such local folder: {tmp_path / 'nope'}" in missing.err
    assert "does not exist" not in missing.err   # not the API's word about a bucket named 'tmp'
    neither = await maas("models", "create", "cli-neither", "-t", "qwen2-custom", "-w", "no-such-bucket-x/model")
    assert neither.code == 1
    assert "no local folder 'no-such-bucket-x/model' and no bucket named 'no-such-bucket-x'" in neither.err
