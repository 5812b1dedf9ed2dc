"""Every action a policy can name: ``maas:<resource>:<verb>``.

Each route of the platform declares exactly one of these (``services.lib.iam.authorize.Authorized``);
a policy's ``Action`` entries must name one or match some with ``*``. Verbs that only read start
with ``get`` or ``list``: the ReadOnly system policy is exactly ``maas:*:get*`` and ``maas:*:list*``.

Self-service actions (who am I, my sessions, my password, which actions I have) are granted to every
signed-in user without a policy; an explicit Deny still removes them.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

PREFIX = "maas"


@dataclass(frozen=True)
class Action:
    name: str
    description: str
    self_service: bool = False

    @property
    def resource(self) -> str:
        return self.name.split(":")[1]

    @property
    def verb(self) -> str:
        return self.name.split(":")[2]

    @property
    def read_only(self) -> bool:
        return self.verb.startswith(("get", "list"))


# resource -> {verb: description}. Resource names are camelCase plurals, as the guide's IAM actions.
_CATALOGUE: dict[str, dict[str, str]] = {
    "templates": {"list": "browse the model square", "get": "see a base-model template"},
    "models": {"create": "create a model from a template and weights", "list": "list my models",
               "get": "see a model and its versions", "delete": "delete a model no task uses",
               "createVersion": "add a version to a model", "getVersion": "see one version of a model"},
    "tuningJobs": {"estimate": "estimate a tuning job's iterations and duration", "create": "create a tuning job",
                   "list": "list tuning jobs", "get": "see a tuning job", "delete": "delete a tuning job",
                   "stop": "stop a tuning job", "continue": "continue a stopped tuning job",
                   "getLogs": "read and download a tuning job's logs",
                   "listCheckpoints": "list a tuning job's checkpoints",
                   "convertCheckpoint": "turn a checkpoint into a model or a model version",
                   "listConversions": "list a tuning job's checkpoint conversions"},
    "compressionJobs": {"listStrategies": "list compression strategies and instance specs",
                        "estimate": "estimate a compression job's duration", "create": "create a compression job",
                        "list": "list compression jobs", "get": "see a compression job",
                        "delete": "delete a compression job", "stop": "stop a compression job",
                        "continue": "continue a stopped compression job (it runs again from the beginning)",
                        "getLogs": "read and download a compression job's logs"},
    "services": {"listInstanceSpecs": "list instance specs and resource pool types",
                 "getRecommendation": "get the recommended instance count for a QPS",
                 "create": "deploy a model as a service", "list": "list my services", "get": "see a service",
                 "stop": "stop a service", "start": "start a service", "delete": "delete a service",
                 "scale": "change a service's instance count", "updateQps": "change a service's QPS limit",
                 "upgrade": "move a service to another model version",
                 "updateModeration": "switch a service's content moderation",
                 "listEvents": "read a service's events", "getLogs": "read a service's instance logs",
                 "getMetrics": "read a service's monitoring figures"},
    "inference": {"call": "call a model: /v1 with an API key, and the playground"},
    "presetServices": {"list": "list preset services and my free quota", "claim": "claim a free quota"},
    "playground": {"getParameters": "read the playground's parameter ranges"},
    "usage": {"list": "read my account's token usage",
              "listCompute": "read my account's compute usage (job and instance hours per pool)"},
    "packages": {"list": "see my account's compute packages and what is left of them",
                 "create": "grant an account a compute package (the platform administrator only)"},
    "apiKeys": {"create": "create an API key", "list": "list my API keys", "update": "change an API key's limits",
                "delete": "delete an API key"},
    "buckets": {"create": "create a bucket", "list": "list my account's buckets"},
    "objects": {"list": "list objects in a bucket", "put": "upload an object (directly or with a presigned URL)"},
    "notificationEventKinds": {"list": "list the event kinds a subscription can pick"},
    "notificationTopics": {"create": "create a notification topic", "list": "list notification topics",
                           "get": "see a notification topic", "delete": "delete a notification topic"},
    "notificationSubscriptions": {"create": "subscribe an endpoint to a topic", "list": "list subscriptions",
                                  "get": "see a subscription", "delete": "delete a subscription",
                                  "resendConfirmation": "send a subscription's confirmation again"},
    "notificationRules": {"create": "create a notification rule", "list": "list notification rules",
                          "delete": "delete a notification rule"},
    "notificationDeliveries": {"list": "read the delivery log", "get": "see one delivery",
                               "retry": "deliver a failed notification again"},
    "events": {"list": "read the account's events"},
    "timelines": {"get": "read the event timeline of a model, job or service"},
    # Dedicated resource pools (guide chapter 3). CommonOperations may use them, not create,
    # update or delete them.
    "pools": {"create": "create a dedicated resource pool", "list": "list resource pools",
              "get": "see a resource pool", "update": "change a dedicated resource pool",
              "delete": "delete a dedicated resource pool"},
    # IAM. Policies may allow reading these; changing them also needs the account's administrator.
    "users": {"create": "create an IAM user in my account", "list": "list my account's users",
              "get": "see a user of my account", "update": "enable, disable or change a user of my account",
              "delete": "delete a user of my account"},
    "groups": {"create": "create a user group", "list": "list user groups", "get": "see a user group",
               "update": "rename or describe a user group", "delete": "delete a user group",
               "addMember": "add a user to a group", "removeMember": "remove a user from a group",
               "attachPolicy": "give a group a policy", "detachPolicy": "take a policy from a group"},
    "policies": {"create": "create a custom policy", "list": "list system and custom policies",
                 "get": "see a policy", "update": "change a custom policy", "delete": "delete a custom policy",
                 "validate": "check a policy document without saving it"},
    "audit": {"list": "read the account's audit log", "export": "download the audit log as CSV"},
    # Platform administration: the policy must allow it and the caller must be the platform admin.
    "accounts": {"create": "create an account with its administrator (platform administrator)"},
    "moderation": {"getBlocklist": "read the moderation blocklist (platform administrator)",
                   "updateBlocklist": "change the moderation blocklist (platform administrator)"},
    "traces": {"list": "list recent traces (platform administrator)",
               "get": "see one trace (platform administrator)"},
    "metrics": {"get": "scrape the Prometheus metrics (platform administrator or MAAS_METRICS_TOKEN)"},
}

# Every signed-in user may do these to themselves, whatever their policies (unless denied explicitly).
_SELF_SERVICE: dict[str, dict[str, str]] = {
    "auth": {"getMe": "see who I am", "listPermissions": "see which actions I may perform",
             "logout": "end my session", "refresh": "exchange my token for a new one",
             "changePassword": "change my password"},
    "sessions": {"list": "list my sessions", "delete": "end one of my sessions"},
    "actions": {"list": "list every action a policy can name"},
}


def _build() -> dict[str, Action]:
    found: dict[str, Action] = {}
    for catalogue, self_service in ((_CATALOGUE, False), (_SELF_SERVICE, True)):
        for resource, verbs in catalogue.items():
            for verb, description in verbs.items():
                name = f"{PREFIX}:{resource}:{verb}"
                found[name] = Action(name, description, self_service)
    return found


ACTIONS: dict[str, Action] = _build()
ALL: tuple[str, ...] = tuple(sorted(ACTIONS))
SELF_SERVICE: frozenset[str] = frozenset(a.name for a in ACTIONS.values() if a.self_service)
RESOURCES: tuple[str, ...] = tuple(sorted({a.resource for a in ACTIONS.values()}))

# IAM changes need the account's administrator on top of an allowing policy: no policy a member can
# be given lets them grant themselves more (services/gateway/accounts/iam_service.py).
IAM_WRITES: frozenset[str] = frozenset(a.name for a in ACTIONS.values()
                                       if a.resource in ("users", "groups", "policies") and not a.read_only
                                       and a.verb != "validate")

# Platform-wide data and settings: a policy may allow these, but only the platform administrator
# (the bootstrap admin) gets them.
PLATFORM_ADMIN_ONLY: frozenset[str] = frozenset(a.name for a in ACTIONS.values()
                                                if a.resource in ("accounts", "moderation", "traces", "metrics"))

INFERENCE_CALL = "maas:inference:call"


def check_known(action: str) -> str:
    """``action`` itself when it is in the catalogue; ValueError naming the nearest ones otherwise."""
    if action in ACTIONS:
        return action
    raise ValueError(f"unknown action {action!r}{suggestion(action)}")


def nearest(text: str, *, n: int = 3) -> list[str]:
    """The catalogue's actions closest to ``text`` (a typo, a wrong case, a singular resource)."""
    lowered = {a.lower(): a for a in ALL}
    return [lowered[m] for m in difflib.get_close_matches(text.lower(), list(lowered), n=n, cutoff=0.6)]


def suggestion(text: str) -> str:
    close = nearest(text)
    return f"; did you mean {' or '.join(close)}?" if close else ""
