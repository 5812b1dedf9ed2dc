"""`maas users|groups|policies|audit|auth` on the running platform (issue 13, item 12): an account's
administrator gives a colleague read-only access through a group, writes a custom policy in a file,
then reads and exports the audit log of what it just did."""
from __future__ import annotations

import csv

import pytest

from contracts import new_id
from tests.integration.cli_helpers import Maas

pytestmark = pytest.mark.integration

GOOD_POLICY = """{
  "Version": "1.1",
  "Statement": [
    {"Effect": "Allow", "Action": ["maas:models:*", "maas:*:list*"]},
    {"Effect": "Deny", "Action": ["maas:models:delete"]}
  ]
}
"""
# The same policy with a misspelt resource on line 4: the API names the line and column.
BAD_POLICY = GOOD_POLICY.replace('"maas:models:*"', '"maas:model:*"')


async def logged_in(url: str, config_dir, username: str, password: str) -> Maas:
    cli = Maas(url, config_dir)
    result = await cli("login", "-u", username, "-p", password)
    assert result.code == 0, result.err
    return cli


async def test_an_administrator_gives_a_colleague_read_only_access_and_audits_it(running_platform, tmp_path):
    url, root = running_platform["url"], running_platform["admin"]
    suffix = new_id()[:6]
    boss, colleague, password = f"boss-{suffix}", f"colleague-{suffix}", "cli-iam-password-1"

    platform_admin = await logged_in(url, tmp_path / "root", root.username, root.password)
    account = await platform_admin("users", "create", boss, "-p", password, "--new-account", "--json")
    assert account.code == 0, account.err
    admin = await logged_in(url, tmp_path / "boss", boss, password)

    group = await admin("groups", "create", "viewers", "--policy", "ReadOnly", "-d", "read only", "--json")
    assert group.code == 0, group.err
    assert [p["name"] for p in group.json()["policies"]] == ["ReadOnly"]
    user = await admin("users", "create", colleague, "-p", password, "--group", "viewers", "--json")
    assert user.code == 0, user.err
    assert user.json()["account_role"] == "member" and [g["name"] for g in user.json()["groups"]] == ["viewers"]
    assert {u["username"] for u in (await admin("users", "list", "--json")).json()["items"]} == {boss, colleague}
    members = (await admin("groups", "members", "viewers", "--json")).json()
    assert [m["username"] for m in members["items"]] == [colleague]

    # A mistake in the file: refused with the line and column, the line shown, nothing saved.
    bad_file, good_file = tmp_path / "bad.json", tmp_path / "policy.json"
    bad_file.write_text(BAD_POLICY)
    good_file.write_text(GOOD_POLICY)
    refused = await admin("policies", "create", "models-only", "--file", str(bad_file))
    assert refused.code == 1 and "line 4, column" in refused.err and "maas:models:" in refused.err
    assert '  4 |     {"Effect": "Allow", "Action": ["maas:model:*"' in refused.err
    checked = await admin("policies", "validate", "--file", str(good_file), "--json")
    assert checked.code == 0 and "maas:models:create" in checked.json()["statements"][0]["matches"]
    created = await admin("policies", "create", "models-only", "--file", str(good_file), "--json")
    assert created.code == 0, created.err
    assert created.json()["document"] == GOOD_POLICY   # the file's text, kept as written
    attached = await admin("groups", "attach-policy", "viewers", "models-only", "--json")
    assert attached.code == 0 and {p["name"] for p in attached.json()["policies"]} == {"ReadOnly", "models-only"}

    # The colleague browses but cannot change the account's policies.
    viewer = await logged_in(url, tmp_path / "colleague", colleague, password)
    assert (await viewer("groups", "list", "--json")).code == 0
    denied = await viewer("policies", "create", "mine", "--file", str(good_file))
    assert denied.code == 1 and "HTTP 403" in denied.err and "maas:policies:create" in denied.err

    # The audit log shows what the administrator just did, filtered by action.
    groups = (await admin("audit", "list", "--action", "maas:groups:*", "--json")).json()
    assert [(r["action"], r["status"], r["username"]) for r in reversed(groups["items"])] == [
        ("maas:groups:create", 201, boss), ("maas:groups:attachPolicy", 200, boss)]
    policies = (await admin("audit", "list", "--action", "maas:policies:create", "--json")).json()
    assert [r["status"] for r in policies["items"]][-2:] == [201, 400] and boss in {
        r["username"] for r in policies["items"]}
    table = await admin("audit", "list", "--user", boss, "--since", "1h")
    assert table.code == 0 and "maas:users:create" in table.out

    exported = tmp_path / "audit.csv"
    done = await admin("audit", "export", "-o", str(exported), "--action", "maas:users:create")
    assert done.code == 0, done.err
    with exported.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["action"], r["username"], r["status"]) for r in rows] == [("maas:users:create", boss, "201")]

    # Disabled: the colleague's token stops working; enabled again, it works.
    assert (await admin("users", "disable", colleague)).code == 0
    blocked = await viewer("whoami")
    assert blocked.code == 1 and "HTTP 401" in blocked.err
    assert (await admin("users", "enable", colleague)).code == 0
    assert (await viewer("whoami")).code == 0

    sessions = (await viewer("auth", "sessions", "list", "--json")).json()
    assert [s["current"] for s in sessions["items"]] == [True]
    assert (await viewer("auth", "logout")).code == 0
    after = await viewer("whoami")
    assert after.code == 1 and "not logged in" in after.err
    gone = await admin("users", "delete", colleague, "--yes", "--json")
    assert gone.code == 0 and gone.json()["account_disabled"] is False
