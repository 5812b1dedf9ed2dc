"""The policy evaluator: explicit Deny wins, no Allow means denied, ``*`` wildcards; checked against a
plain reference implementation on random policies (hypothesis), and the three system policies."""
from __future__ import annotations

import fnmatch

from hypothesis import given, settings
from hypothesis import strategies as st

from services.lib.iam.actions import ACTIONS, ALL, RESOURCES, SELF_SERVICE
from services.lib.iam.evaluator import Grant, Statement, compile_policy
from services.lib.iam.system_policies import SYSTEM_POLICIES

POOL_CHANGES = {"maas:pools:create", "maas:pools:update", "maas:pools:delete"}
VERBS = sorted({a.split(":")[2] for a in ALL})


def reference_allows(policies: list[tuple[Statement, ...]], action: str) -> bool:
    """The rules as the guide states them, as plainly as possible."""
    def matches(pattern: str) -> bool:
        return fnmatch.fnmatchcase(action.lower(), pattern.lower().replace("[", "[[]").replace("?", "[?]"))
    statements = [s for p in policies for s in p]
    if any(s.effect == "Deny" and any(matches(p) for p in s.actions) for s in statements):
        return False
    return any(s.effect == "Allow" and any(matches(p) for p in s.actions) for s in statements)


def grant(policies: list[tuple[Statement, ...]]) -> Grant:
    return Grant(tuple(compile_policy(f"p{i}", statements) for i, statements in enumerate(policies)))


# Patterns built from real parts, wildcards and near-misses, so that they match some actions and not others.
part = st.one_of(st.just("*"), st.sampled_from(RESOURCES), st.sampled_from(VERBS),
                 st.builds(lambda v: v[:2] + "*", st.sampled_from(VERBS)),
                 st.builds(lambda v: v.upper(), st.sampled_from(RESOURCES)))
pattern = st.one_of(st.builds(lambda r, v: f"maas:{r}:{v}", part, part), st.sampled_from(ALL),
                    st.sampled_from(["*", "maas:*", "maas:*:*", "maas:*:get*", "maas:*:list*"]))
statement = st.builds(Statement, st.sampled_from(["Allow", "Deny"]),
                      st.lists(pattern, min_size=1, max_size=4).map(tuple))
policies = st.lists(st.lists(statement, min_size=1, max_size=4).map(tuple), min_size=0, max_size=4)
action = st.sampled_from(ALL)


@settings(max_examples=300, deadline=None)
@given(policies, action)
def test_decisions_agree_with_the_reference(policies, action):
    assert grant(policies).allows(action) == reference_allows(policies, action)


@settings(max_examples=200, deadline=None)
@given(policies, action)
def test_an_explicit_deny_wins_over_any_allow(policies, action):
    with_deny = [*policies, (Statement("Allow", ("*",)), Statement("Deny", (action,)))]
    assert not grant(with_deny).allows(action)
    decision = grant(with_deny).decide(action)
    assert not decision.grantable and decision.policy is not None and "denies it" in decision.reason


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.builds(Statement, st.just("Deny"), st.lists(pattern, min_size=1, max_size=4).map(tuple)),
                         min_size=1, max_size=4).map(tuple), max_size=4), action)
def test_without_an_allow_everything_is_denied(deny_only, action):
    assert not grant(deny_only).allows(action)
    assert not grant([]).allows(action)
    assert grant([]).decide(action).reason == "no policy allows it"


@settings(max_examples=200, deadline=None)
@given(policies, action, st.randoms(use_true_random=False))
def test_the_order_of_policies_and_statements_does_not_matter(policies, action, rnd):
    shuffled = [tuple(rnd.sample(p, len(p))) for p in rnd.sample(policies, len(policies))]
    assert grant(policies).allows(action) == grant(shuffled).allows(action)


@settings(max_examples=200, deadline=None)
@given(policies, statement, action)
def test_an_allow_never_takes_away_and_a_deny_never_gives(policies, extra, action):
    before = grant(policies).allows(action)
    after = grant([*policies, (extra,)]).allows(action)
    if extra.effect == "Allow":
        assert after or not before
    else:
        assert before or not after


def test_a_remembered_decision_is_the_same_decision():
    g = grant([(Statement("Allow", ("maas:models:*",)), Statement("Deny", ("maas:models:delete",)))])
    assert [g.allows("maas:models:create"), g.allows("maas:models:delete")] == [True, False]
    assert [g.allows("maas:models:create"), g.allows("maas:models:delete")] == [True, False]
    assert g.decide("maas:models:create").policy == "p0"


def system(name: str) -> Grant:
    return Grant((SYSTEM_POLICIES[name].compiled(),))


def test_full_access_allows_every_action_pool_changes_included():
    assert all(system("FullAccess").allows(a) for a in ALL)


def test_common_operations_allows_everything_but_changing_pools():
    common = system("CommonOperations")
    assert {a for a in ALL if not common.allows(a)} == POOL_CHANGES
    assert common.allows("maas:pools:list") and common.allows("maas:pools:get")


def test_read_only_allows_get_and_list_actions_only():
    read_only = system("ReadOnly")
    allowed = {a for a in ALL if read_only.allows(a)}
    assert allowed == {a for a in ALL if a.split(":")[2].startswith(("get", "list"))}
    assert "maas:models:list" in allowed and "maas:services:getLogs" in allowed
    assert not read_only.allows("maas:inference:call") and not read_only.allows("maas:models:create")


def test_full_access_and_common_operations_together_keep_full_access():
    # CommonOperations is written with Allows only: holding both must not take pool changes away.
    both = Grant((SYSTEM_POLICIES["CommonOperations"].compiled(), SYSTEM_POLICIES["FullAccess"].compiled()))
    assert all(both.allows(a) for a in POOL_CHANGES)


def test_the_catalogue_is_consistent():
    assert all(a.count(":") == 2 and a.startswith("maas:") for a in ALL)
    assert SELF_SERVICE <= set(ALL) and "maas:auth:getMe" in SELF_SERVICE
    assert {"maas:models:create", "maas:services:scale", "maas:inference:call", "maas:pools:create",
            "maas:tuningJobs:create"} <= set(ALL)
    assert all(ACTIONS[a].description for a in ALL)
