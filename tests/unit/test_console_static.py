"""The console's static app without servers: routes, no CDN, module imports that resolve, zh coverage."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.lib.common.errors import install_error_handlers
from services.apps.console import routes
from services.lib.iam.actions import ACTIONS

STATIC = Path(routes.__file__).parent / "static"
JS = sorted((STATIC / "js").rglob("*.js"))


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(routes.router)
    return TestClient(app)


def test_every_console_url_serves_the_single_page_app(client):
    for path in ("/", "/console/", "/console/models/abc123", "/console/tuning/create?model=x"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), path
        assert '<script type="importmap">' in r.text and "/console/assets/js/app.js" in r.text
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/"


def test_assets_are_served_with_their_types_and_nothing_outside_static(client):
    r = client.get("/console/assets/js/app.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert client.get("/console/assets/app.css").headers["content-type"].startswith("text/css")
    assert client.get("/console/assets/vendor/uPlot.esm.js").status_code == 200
    for bad in ("/console/assets/%2e%2e/routes.py", "/console/assets/%2e%2e/%2e%2e/cli/config.py",
                "/console/assets/js", "/console/assets/nope.js"):
        r = client.get(bad)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", bad
    # A plain '..' is resolved by the client before it is sent: just another console page.
    assert "from fastapi" not in client.get("/console/assets/../routes.py").text
    assert "console" not in str(client.get("/openapi.json").json()["paths"])  # not part of the REST API


def test_no_asset_comes_from_the_network():
    for path in [STATIC / "index.html", STATIC / "app.css", *JS]:
        text = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']https?://""", text), path
        assert not re.search(r"""from\s+["']https?://""", text), path
        assert not re.search(r"""@import\s+url\(["']?https?://""", text), path


def _exports(path: Path) -> set[str]:
    text = path.read_text()
    names = set(re.findall(r"export\s+(?:async\s+)?(?:function|const|let|class)\s+(\w+)", text))
    for group in re.findall(r"export\s*\{([^}]*)\}", text):
        names |= {part.split(" as ")[-1].strip() for part in group.split(",") if part.strip()}
    return names


def test_every_relative_import_names_a_real_export():
    for path in JS:
        text = path.read_text()
        for names, target in re.findall(r"import\s*\{([^}]*)\}\s*from\s*'(\.[^']+)'", text):
            module = (path.parent / target).resolve()
            assert module.is_file(), f"{path.name}: {target} does not exist"
            missing = {n.strip() for n in names.split(",") if n.strip()} - _exports(module)
            assert not missing, f"{path.name} imports {missing} that {target} does not export"


def test_every_literal_text_has_a_chinese_translation():
    i18n = (STATIC / "js" / "i18n.js").read_text()
    zh_block = i18n[i18n.index("const zh = {"):i18n.index("};", i18n.index("const zh = {"))]
    zh_keys = set(re.findall(r"^\s*'((?:[^'\\]|\\.)*)':", zh_block, flags=re.MULTILINE))
    used = set()
    for path in JS:
        used |= set(re.findall(r"\bt\('((?:[^'\\]|\\.)*)'", path.read_text()))
    assert len(used) > 200 and len(zh_keys) > 200
    missing = sorted(k for k in used if k not in zh_keys)
    assert not missing, f"texts without a Chinese translation: {missing}"


def test_every_action_the_console_checks_is_in_the_catalogue():
    # One unknown name makes GET /api/v1/auth/permissions answer 400, and then nothing is greyed.
    named = set()
    for path in JS:
        named |= set(re.findall(r"""['"](maas:[A-Za-z*]+:[A-Za-z*]+)['"]""", path.read_text()))
    assert {"maas:services:create", "maas:models:create", "maas:inference:call"} <= named
    unknown = sorted(a for a in named if a not in ACTIONS and "*" not in a)
    assert not unknown, f"actions the console names that the platform does not have: {unknown}"


def _job_kinds() -> dict[str, str]:
    """The job kinds the pages describe to jobs.js: page file name -> IAM resource."""
    kinds = {}
    for path in (STATIC / "js" / "pages").glob("*.js"):
        found = re.findall(r"resource: '(\w+)'", path.read_text())
        if found:
            kinds[path.name] = found[0]
    return kinds


def test_the_tuning_and_compression_pages_are_the_shared_job_pages():
    assert _job_kinds() == {"tuning.js": "tuningJobs", "compression.js": "compressionJobs"}
    for name in _job_kinds():
        text = (STATIC / "js" / "pages" / name).read_text()
        # List, detail, logs, stop / continue / delete come from jobs.js: a kind page does not grow its own copy.
        assert "<${JobListPage} kind=" in text and "<${JobPage} kind=" in text, name
        assert "/logs/download" not in text and "ConfirmDelete" not in text and "/stop`" not in text, name


def test_every_action_a_job_kind_implies_is_in_the_catalogue():
    # jobs.js names its actions as maas:${kind.resource}:<verb>, which the literal search above cannot see.
    verbs = set(re.findall(r"maas:\$\{kind\.resource\}:(\w+)", (STATIC / "js" / "jobs.js").read_text()))
    assert verbs == {"create", "stop", "continue", "delete"}
    implied = {f"maas:{resource}:{verb}" for resource in _job_kinds().values() for verb in verbs}
    assert "maas:compressionJobs:stop" in implied
    unknown = sorted(a for a in implied if a not in ACTIONS)
    assert not unknown, f"actions the job pages check that the platform does not have: {unknown}"
