"""Custom policies as a user pastes them (guide figure 2-19): what is accepted, and every refusal
naming the line, the column and the rule."""
from __future__ import annotations

import json

import pytest

from services.lib.iam.evaluator import Statement
from services.lib.iam.policy import MAX_CHARS, PolicyError, matching, parse_policy

GUIDE_EXAMPLE = """{
  "Version": "1.1",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [
        "maas:models:create",
        "maas:services:*",
        "maas:*:get*"
      ]
    },
    {
      "Effect": "Deny",
      "Action": ["maas:services:delete"]
    }
  ]
}"""


def refusal(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as raised:
        parse_policy(text)
    return raised.value


def test_the_guides_format_is_read_as_written():
    policy = parse_policy(GUIDE_EXAMPLE)
    assert policy.statements == (
        Statement("Allow", ("maas:models:create", "maas:services:*", "maas:*:get*")),
        Statement("Deny", ("maas:services:delete",)))
    assert policy.to_json() == json.loads(GUIDE_EXAMPLE)


def test_a_single_action_string_is_a_list_of_one():
    policy = parse_policy('{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": "maas:models:list"}]}')
    assert policy.statements == (Statement("Allow", ("maas:models:list",)),)


def test_malformed_json_names_the_line_and_column():
    text = GUIDE_EXAMPLE.replace('"Effect": "Allow",', '"Effect": "Allow"')   # a missing comma on line 5
    error = refusal(text)
    assert (error.line, error.column) == (6, 7)
    assert str(error).startswith("line 6, column 7: malformed JSON: Expecting ',' delimiter")


def test_an_unknown_action_is_refused_with_the_nearest_valid_ones():
    error = refusal(GUIDE_EXAMPLE.replace("maas:models:create", "maas:model:create"))
    assert (error.line, error.column) == (7, 9)   # where the misspelt action is in the text
    assert 'unknown action "maas:model:create"' in str(error)
    assert 'did you mean "maas:models:create"' in str(error)


def test_a_misspelt_wildcard_is_repaired_in_the_suggestion():
    error = refusal('{"Version": "1.1", "Statement": [{"Effect": "Deny", "Action": ["maas:servces:*"]}]}')
    assert 'did you mean "maas:services:*"?' in str(error)


def test_another_services_action_says_this_platforms_start_with_maas():
    error = refusal('{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["iam:agencies:listAgencies"]}]}')
    assert 'unknown action "iam:agencies:listAgencies"' in str(error) and 'start with "maas:"' in str(error)


@pytest.mark.parametrize("effect", ["Permit", "allow", "DENY", ""])
def test_an_unknown_effect_is_refused(effect):
    error = refusal(GUIDE_EXAMPLE.replace('"Effect": "Deny"', f'"Effect": "{effect}"'))
    assert f'Statement[1].Effect must be "Allow" or "Deny", not "{effect}"' in str(error)
    assert error.line == 13


@pytest.mark.parametrize("version", ['"1.0"', '"2"', "1.1", "null"])
def test_an_unknown_version_is_refused(version):
    error = refusal(GUIDE_EXAMPLE.replace('"1.1"', version))
    assert "unknown Version" in str(error) and 'it must be "1.1"' in str(error) and error.line == 2


def test_resource_and_condition_are_refused_not_ignored():
    # Ignoring them would grant on every resource what the author meant for one.
    for key in ("Resource", "Condition"):
        text = f'{{"Version": "1.1", "Statement": [{{"Effect": "Allow", "Action": ["maas:services:*"], "{key}": []}}]}}'
        assert f"Statement[0].{key} is not supported" in str(refusal(text))


@pytest.mark.parametrize("text, rule", [
    ("", "the policy is empty"),
    ("[]", "must be a JSON object"),
    ('{"Version": "1.1"}', '"Statement" must be a non-empty list'),
    ('{"Version": "1.1", "Statement": []}', '"Statement" must be a non-empty list'),
    ('{"Statement": [{"Effect": "Allow", "Action": ["maas:*:*"]}]}', '"Version" is required'),
    ('{"Version": "1.1", "Statement": [{"Effect": "Allow"}], "Extra": 1}', 'unknown key "Extra"'),
    ('{"Version": "1.1", "Statement": [{"Effect": "Allow"}]}', "Statement[0].Action is required"),
    ('{"Version": "1.1", "Statement": [{"Action": ["maas:*:*"]}]}', "Statement[0].Effect is required"),
    ('{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": []}]}', "must be a non-empty list of action"),
    ('{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": [1]}]}', "must be a non-empty list of action"),
    ('{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["maas:models:*"], "Effect": "Deny"}]}',
     '"Effect" appears twice'),
    ('{"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["maas models create"]}]}', "is not an action"),
])
def test_every_malformed_document_gets_a_rule(text, rule):
    assert rule in str(refusal(text))


def test_a_policy_longer_than_the_guides_limit_is_refused():
    long = GUIDE_EXAMPLE + " " * (MAX_CHARS - len(GUIDE_EXAMPLE) + 1)
    assert f"at most {MAX_CHARS} are allowed" in str(refusal(long))
    parse_policy(GUIDE_EXAMPLE + " " * (MAX_CHARS - len(GUIDE_EXAMPLE)))


def test_wildcards_match_across_parts_and_ignore_case():
    assert "maas:services:scale" in matching("maas:services:*")
    assert set(matching("maas:*:get*")) >= {"maas:models:get", "maas:services:getLogs", "maas:tuningJobs:getLogs"}
    assert matching("MAAS:Models:Create") == ["maas:models:create"]
    assert len(matching("*")) == len(matching("maas:*")) > 100
    assert matching("maas:nothing:*") == []
