"""The job state machine. Every status write goes through ``allowed_from``, so a transition that
is not in the table never happens, whoever tries it (API, worker, watchdog)."""
from __future__ import annotations

from services.tuning.models import MAX_UNCONDITIONAL_RESTARTS
from services.tuning.models import JobStatus as S

TRANSITIONS: dict[S, frozenset[S]] = {
    S.creating: frozenset({S.waiting, S.running, S.stopped, S.failed}),
    S.waiting: frozenset({S.running, S.stopped, S.failed}),
    S.running: frozenset({S.completed, S.failed, S.stopped, S.waiting}),   # waiting: auto-restart
    S.stopped: frozenset({S.creating}),                                    # continue
    S.completed: frozenset(),
    S.failed: frozenset(),
}

STOPPABLE = frozenset({S.creating, S.waiting, S.running})   # guide: 运行中、等待中、创建中 can be stopped
CLAIMABLE = frozenset({S.creating, S.waiting})               # a worker may start these
FINISHED = frozenset({S.completed, S.failed})


def can_transition(current: str, target: str) -> bool:
    return S(target) in TRANSITIONS[S(current)]


def allowed_from(target: S) -> list[str]:
    """The states from which ``target`` may be entered (the filter of a conditional update)."""
    return [s.value for s, nxt in TRANSITIONS.items() if target in nxt]


def may_auto_restart(policy: dict, *, restarts: int, streak: int, environmental: bool) -> bool:
    """Table 6-4 auto-restart: on, below max_restarts, and either an environment failure (storage,
    network, a lost worker) or unconditional restart on with fewer than 3 such restarts in a row."""
    if not policy.get("enabled") or restarts >= policy.get("max_restarts", 3):
        return False
    return environmental or (bool(policy.get("unconditional")) and streak < MAX_UNCONDITIONAL_RESTARTS)
