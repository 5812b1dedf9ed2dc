"""`maas users|groups|policies|audit|auth` against a faked API: the calls they make, what they print,
their exit status on the API's errors."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from services.apps.cli import config as cli_config
from services.apps.cli.audit_cmds import parse_time
from services.apps.cli.policies_cmds import source_excerpt
from tests.unit.cli_fakes import NOT_FOUND, FakeApi, api, maas  # noqa: F401 (api is a fixture)

ALICE = {"id": "u1", "username": "alice", "account_role": "member", "status": "active", "platform_admin": False,
         "groups": [{"id": "g1", "name": "readers"}], "created_at": "2026-12-01T08:00:00Z"}
READERS = {"id": "g1", "name": "readers", "description": "", "created_at": "2026-12-01T08:00:00Z",
           "policies": [{"id": "ReadOnly", "name": "ReadOnly", "type": "system"}], "member_count": 1,
           "members": [{"id": "u1", "username": "alice"}]}
CUSTOM = {"id": "p1", "name": "models-only", "type": "custom", "description": "", "groups": [],
          "document": '{"Version": "1.1", "Statement": []}', "created_at": None, "updated_at": None}


def users_and_groups(api: FakeApi) -> None:
    api.on("GET", "/api/v1/iam/users", {"total": 1, "items": [ALICE]})
    api.on("GET", "/api/v1/iam/users/u1", ALICE)
    api.on("GET", "/api/v1/iam/groups", {"total": 1, "items": [READERS]})
    api.on("GET", "/api/v1/iam/groups/g1", READERS)
    api.on("GET", "/api/v1/iam/policies", {"total": 1, "items": [CUSTOM]})
    api.on("GET", "/api/v1/iam/policies/p1", CUSTOM)
    api.on("GET", "/api/v1/iam/policies/ReadOnly", {**CUSTOM, "id": "ReadOnly", "name": "ReadOnly", "type": "system"})


# ------------------------------------------------------------------------------------ users

def test_users_list_as_a_table_and_as_json(api):
    users_and_groups(api)
    shown = maas("users", "list")
    assert shown.exit_code == 0 and "alice" in shown.output and "readers" in shown.output
    assert json.loads(maas("users", "list", "--json").output)["items"][0]["username"] == "alice"


def test_users_create_in_my_account_with_groups_by_name(api):
    users_and_groups(api)
    api.on("POST", "/api/v1/iam/users", {**ALICE, "username": "bob", "id": "u2"}, status=201)
    done = maas("users", "create", "bob", "-p", "secret-pass", "--group", "readers", "--admin")
    assert done.exit_code == 0, done.output
    [call] = api.sent("POST", "/api/v1/iam/users")
    assert call.body == {"username": "bob", "password": "secret-pass", "account_role": "admin", "group_ids": ["g1"]}
    assert "created user bob" in done.output


def test_users_create_new_account_uses_the_platform_admins_route(api):
    api.on("POST", "/api/v1/users", {"user_id": "u9", "username": "carol", "tenant_id": "t9",
                                     "default_bucket": "maas-t9"}, status=201)
    done = maas("users", "create", "carol", "-p", "secret-pass", "--new-account")
    assert done.exit_code == 0, done.output
    assert api.sent("POST", "/api/v1/users")[0].body == {"username": "carol", "password": "secret-pass"}
    assert not api.sent("POST", "/api/v1/iam/users") and "account t9" in done.output
    mixed = maas("users", "create", "dave", "-p", "secret-pass", "--new-account", "--admin")
    assert mixed.exit_code == 1 and "do not go with --new-account" in mixed.output
    assert len(api.sent("POST", "/api/v1/users")) == 1


def test_users_show_by_username_falls_back_to_the_listing(api):
    users_and_groups(api)
    shown = maas("users", "show", "alice", "--json")
    assert shown.exit_code == 0 and json.loads(shown.output)["id"] == "u1"
    missing = maas("users", "show", "nobody")
    assert missing.exit_code == 1 and "user 'nobody' does not exist" in missing.output


def test_users_disable_enable_and_set_role_patch_the_user(api):
    users_and_groups(api)
    api.on("PATCH", "/api/v1/iam/users/u1", ALICE)
    assert maas("users", "disable", "alice").exit_code == 0
    assert maas("users", "enable", "u1").exit_code == 0
    assert maas("users", "set-role", "alice", "admin").exit_code == 0
    assert [c.body for c in api.sent("PATCH", "/api/v1/iam/users/u1")] == [
        {"status": "disabled"}, {"status": "active"}, {"account_role": "admin"}]
    wrong = maas("users", "set-role", "alice", "owner")
    assert wrong.exit_code == 1 and "ROLE must be one of admin, member" in wrong.output
    assert len(api.sent("PATCH", "/api/v1/iam/users/u1")) == 3


def test_users_delete_needs_confirmation_and_reports_the_apis_refusal(api):
    users_and_groups(api)
    kept = maas("users", "delete", "alice", input="no\n")
    assert kept.exit_code == 1 and "not deleted" in kept.output and not api.sent("DELETE", "/api/v1/users/u1")
    api.on("DELETE", "/api/v1/users/u1", {"error": {"code": "last_administrator", "message": (
        "'alice' is the last administrator of the account and cannot be deleted")}}, status=409)
    refused = maas("users", "delete", "alice", "--yes")
    assert refused.exit_code == 1
    assert "HTTP 409, last_administrator" in refused.output and "last administrator" in refused.output
    api.on("DELETE", "/api/v1/users/u1", {"user_id": "u1", "tenant_id": "t1", "account_disabled": True})
    gone = maas("users", "delete", "alice", input="DELETE\n")
    assert gone.exit_code == 0 and "deleted user alice" in gone.output and "is now disabled" in gone.output


def test_users_delete_of_another_accounts_user_goes_by_id_to_the_api(api):
    users_and_groups(api)
    api.on("DELETE", "/api/v1/users/u77", {"user_id": "u77", "tenant_id": "t7", "account_disabled": False})
    done = maas("users", "delete", "u77", "--yes")
    assert done.exit_code == 0 and "deleted user u77" in done.output
    missing = maas("users", "delete", "nobody", "--yes")
    assert missing.exit_code == 1 and "HTTP 404" in missing.output and api.sent("DELETE", "/api/v1/users/nobody")


def test_users_group_membership_by_names(api):
    users_and_groups(api)
    api.on("POST", "/api/v1/iam/groups/g1/members", {**READERS, "member_count": 2})
    api.on("DELETE", "/api/v1/iam/groups/g1/members/u1", status=204)
    added = maas("users", "add-to-group", "alice", "readers")
    assert added.exit_code == 0 and "added alice to readers (2 members)" in added.output
    assert api.sent("POST", "/api/v1/iam/groups/g1/members")[0].body == {"user_id": "u1"}
    removed = maas("users", "remove-from-group", "alice", "readers", "--json")
    assert removed.exit_code == 0 and json.loads(removed.output)["id"] == "g1"
    assert api.sent("DELETE", "/api/v1/iam/groups/g1/members/u1")


# ------------------------------------------------------------------------------------ groups

def test_groups_create_with_system_and_custom_policies(api):
    users_and_groups(api)
    api.on("POST", "/api/v1/iam/groups", READERS, status=201)
    done = maas("groups", "create", "readers", "-p", "ReadOnly", "-p", "models-only", "-d", "people who read")
    assert done.exit_code == 0, done.output
    assert api.sent("POST", "/api/v1/iam/groups")[0].body == {
        "name": "readers", "description": "people who read", "policy_ids": ["ReadOnly", "p1"]}
    unknown = maas("groups", "create", "x", "-p", "NoSuchPolicy")
    assert unknown.exit_code == 1 and "policy 'NoSuchPolicy' does not exist" in unknown.output
    assert len(api.sent("POST", "/api/v1/iam/groups")) == 1


def test_groups_list_show_members_and_policies(api):
    users_and_groups(api)
    assert "ReadOnly" in maas("groups", "list").output
    assert "alice" in maas("groups", "show", "readers").output
    members = json.loads(maas("groups", "members", "readers", "--json").output)
    assert members["items"] == [{"id": "u1", "username": "alice"}] and members["total"] == 1
    api.on("POST", "/api/v1/iam/groups/g1/policies", READERS)
    api.on("DELETE", "/api/v1/iam/groups/g1/policies/p1", status=204)
    assert maas("groups", "attach-policy", "readers", "models-only").exit_code == 0
    assert api.sent("POST", "/api/v1/iam/groups/g1/policies")[0].body == {"policy_id": "p1"}
    assert maas("groups", "detach-policy", "readers", "models-only").exit_code == 0
    assert api.sent("DELETE", "/api/v1/iam/groups/g1/policies/p1")
    api.on("DELETE", "/api/v1/iam/groups/g1", status=204)
    assert maas("groups", "delete", "readers", "-y").exit_code == 0 and api.sent("DELETE", "/api/v1/iam/groups/g1")


# ------------------------------------------------------------------------------------ policies

POLICY_TEXT = """{
  "Version": "1.1",
  "Statement": [
    {"Effect": "Allow", "Action": ["maas:model:create"]}
  ]
}
"""


def test_policies_create_sends_the_file_text_as_is(api, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(POLICY_TEXT)
    api.on("POST", "/api/v1/iam/policies", CUSTOM, status=201)
    done = maas("policies", "create", "models-only", "--file", str(path))
    assert done.exit_code == 0, done.output
    assert api.sent("POST", "/api/v1/iam/policies")[0].body == {"name": "models-only", "description": "",
                                                                "document": POLICY_TEXT}
    missing = maas("policies", "create", "x", "--file", str(tmp_path / "nope.json"))
    assert missing.exit_code == 1 and "is not a file" in missing.output


def test_a_refused_document_prints_the_line_and_a_caret_at_the_column(api, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(POLICY_TEXT)
    message = ('document: line 4, column 36: Statement[0].Action: unknown action "maas:model:create"; '
               'did you mean "maas:models:create"?')
    api.on("POST", "/api/v1/iam/policies/validate", {"error": {"code": "invalid_policy", "message": message,
                                                               "field": "document"}}, status=400)
    result = maas("policies", "validate", "--file", str(path))
    assert result.exit_code == 1
    assert "line 4, column 36" in result.output and "maas:models:create" in result.output
    lines = result.output.splitlines()
    source = next(i for i, line in enumerate(lines) if line.startswith("  4 | "))
    assert lines[source + 1].index("^") == lines[source].index('"maas:model:create"')


def test_source_excerpt_only_for_a_position_inside_the_text():
    assert source_excerpt("ab\ncd", "line 2, column 2: x") == ["  2 | cd", "       ^"]
    assert source_excerpt("ab", "line 9, column 1: x") == [] and source_excerpt("ab", "no position") == []


def test_policies_validate_lists_what_each_statement_covers(api, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(POLICY_TEXT)
    api.on("POST", "/api/v1/iam/policies/validate", {"valid": True, "statements": [
        {"effect": "Allow", "actions": ["maas:models:c*"], "matches": ["maas:models:create",
                                                                       "maas:models:createVersion"]}]})
    shown = maas("policies", "validate", "-f", str(path))
    assert shown.exit_code == 0 and "valid" in shown.output and "maas:models:createVersion" in shown.output
    assert json.loads(maas("policies", "validate", "-f", str(path), "--json").output)["valid"] is True


def test_policies_update_show_and_delete(api, tmp_path):
    users_and_groups(api)
    api.on("PATCH", "/api/v1/iam/policies/p1", CUSTOM)
    nothing = maas("policies", "update", "models-only")
    assert nothing.exit_code == 1 and "--file, --name or --description" in nothing.output
    assert maas("policies", "update", "models-only", "--description", "d").exit_code == 0
    assert api.sent("PATCH", "/api/v1/iam/policies/p1")[0].body == {"description": "d"}
    shown = maas("policies", "show", "models-only")
    assert shown.exit_code == 0 and '"Version": "1.1"' in shown.output
    api.on("DELETE", "/api/v1/iam/policies/p1", {"error": {"code": "policy_in_use", "message": (
        "the policy is attached to the group(s) readers; detach it first")}}, status=409)
    refused = maas("policies", "delete", "models-only", "-y")
    assert refused.exit_code == 1 and "detach it first" in refused.output


# ------------------------------------------------------------------------------------ audit

RECORD = {"id": "a1", "at": "2026-12-06T10:00:00Z", "account_id": "t1", "user_id": "u0", "username": "root",
          "action": "maas:groups:create", "resource": "/api/v1/iam/groups", "method": "POST", "status": 201,
          "client": "127.0.0.1"}


def test_audit_list_sends_the_filters_and_pages(api):
    api.on("GET", "/api/v1/audit", {"total": 120, "items": [RECORD] * 50})
    shown = maas("audit", "list", "--user", "root", "--action", "maas:groups:*", "--resource", "/api/v1/iam",
                 "--since", "2026-12-01T00:00:00+00:00", "--page", "2")
    assert shown.exit_code == 0, shown.output
    assert "maas:groups:create" in shown.output and "51-100 of 120" in shown.output and "--page 3" in shown.output
    params = api.sent("GET", "/api/v1/audit")[0].params
    assert params == {"user": "root", "action": "maas:groups:*", "resource": "/api/v1/iam",
                      "since": "2026-12-01T00:00:00+00:00", "offset": "50", "limit": "50"}
    as_json = json.loads(maas("audit", "list", "--json", "-n", "5").output)
    assert as_json["total"] == 120 and api.sent("GET", "/api/v1/audit")[1].params == {"offset": "0", "limit": "5"}


def test_audit_list_refuses_bad_times_and_paging_before_calling(api):
    bad = maas("audit", "list", "--since", "yesterday")
    assert bad.exit_code == 1 and "--since: 'yesterday' is neither an ISO 8601 time" in bad.output
    assert maas("audit", "list", "--limit", "0").exit_code == 1
    assert maas("audit", "list", "--page", "0").exit_code == 1
    assert not api.calls


def test_parse_time_takes_ages_and_iso_times():
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_time("2h", option="--since", now=now) == "2026-12-06T10:00:00+00:00"
    assert parse_time("7d", option="--since", now=now) == "2026-11-29T12:00:00+00:00"
    assert parse_time("2026-12-01T09:30:00Z", option="--until") == "2026-12-01T09:30:00+00:00"
    assert parse_time(None, option="--until") is None


def test_audit_export_writes_the_csv_file(api, tmp_path):
    csv_text = ("at,account_id,user_id,username,action,resource,method,status,client,id\r\n"
                "2026-12-06T10:00:00+00:00,t1,u0,root,maas:groups:create,/api/v1/iam/groups,POST,201,127.0.0.1,a1\r\n")
    api.on("GET", "/api/v1/audit/export", text=csv_text)
    out = tmp_path / "audit.csv"
    done = maas("audit", "export", "-o", str(out), "--action", "maas:groups:create")
    assert done.exit_code == 0, done.output
    assert out.read_bytes() == csv_text.encode() and "wrote 1 audit records" in done.output
    assert api.sent("GET", "/api/v1/audit/export")[0].params == {"action": "maas:groups:create"}


def test_a_refused_export_leaves_no_file(api, tmp_path):
    api.on("GET", "/api/v1/audit/export", {"error": {"code": "forbidden", "message": (
        "user 'bob' lacks the action maas:audit:export")}}, status=403)
    out = tmp_path / "audit.csv"
    refused = maas("audit", "export", "-o", str(out))
    assert refused.exit_code == 1 and "maas:audit:export" in refused.output
    assert list(tmp_path.iterdir()) == [tmp_path / "cfg"]


# ------------------------------------------------------------------------------------ auth

def test_logout_revokes_the_token_then_forgets_it(api):
    api.on("POST", "/api/v1/auth/logout", status=204)
    done = maas("auth", "logout")
    assert done.exit_code == 0 and "revoked" in done.output
    assert api.sent("POST", "/api/v1/auth/logout") and cli_config.load().token is None
    assert maas("logout").output.strip() == "Not logged in."


def test_logout_with_a_dead_token_still_forgets_it(api):
    api.on("POST", "/api/v1/auth/logout", {"error": {"code": "unauthorized", "message": "invalid or revoked token"}},
           status=401)
    done = maas("logout")
    assert done.exit_code == 0 and "already expired or been revoked" in done.output
    assert cli_config.load().token is None


def test_sessions_list_and_revoking_the_current_one_forgets_the_token(api):
    sessions = {"total": 2, "items": [
        {"id": "s1", "name": "login", "client": "127.0.0.1", "created_at": "2026-12-06T10:00:00Z",
         "last_seen_at": None, "expires_at": "2026-12-06T22:00:00Z", "current": True, "user_agent": ""},
        {"id": "s2", "name": "login", "client": "10.0.0.2", "created_at": "2026-12-05T10:00:00Z",
         "last_seen_at": None, "expires_at": "2026-12-05T22:00:00Z", "current": False, "user_agent": ""}]}
    api.on("GET", "/api/v1/auth/sessions", sessions)
    api.on("DELETE", "/api/v1/auth/sessions/s2", status=204)
    api.on("DELETE", "/api/v1/auth/sessions/s1", status=204)
    listed = maas("auth", "sessions", "list")
    assert listed.exit_code == 0 and "10.0.0.2" in listed.output
    assert maas("auth", "sessions", "revoke", "s2").exit_code == 0 and cli_config.load().token == "maas-t"
    current = maas("auth", "sessions", "revoke", "s1")
    assert current.exit_code == 0 and "maas login" in current.output and cli_config.load().token is None
    cli_config.save(cli_config.CliConfig(url="http://maas", token="maas-t2", username="root"))
    missing = maas("auth", "sessions", "revoke", "s9")
    assert missing.exit_code == 1 and "not found" in missing.output


def test_password_change_sends_both_passwords(api):
    api.on("POST", "/api/v1/auth/password", {"revoked_sessions": 2})
    done = maas("auth", "password", input="old-password\nnew-password\nnew-password\n")
    assert done.exit_code == 0 and "2 other session(s) ended" in done.output
    assert api.sent("POST", "/api/v1/auth/password")[0].body == {"current_password": "old-password",
                                                                  "new_password": "new-password"}
    api.on("POST", "/api/v1/auth/password", {"error": {"code": "wrong_password", "field": "current_password",
                                                       "message": "current_password is not this user's password"}},
           status=400)
    wrong = maas("auth", "password", "--current", "x", "--new", "new-password2")
    assert wrong.exit_code == 1 and "field: current_password" in wrong.output
