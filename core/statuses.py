"""Status words that are not a request's state: a host's result in a run, and AWX's own job statuses.

StrEnums, like `core.states.RequestState`: members compare equal to, and store as, their values.
"""

from __future__ import annotations

from enum import StrEnum


class HostStatus(StrEnum):
    """One host's result in a run (`host_results.status`), from its job events."""

    PENDING = "pending"
    RUNNING = "running"
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


# A host that failed once stays failed however its later events are ordered.
HOST_FAILED = frozenset({HostStatus.FAILED, HostStatus.UNREACHABLE})


class AwxStatus(StrEnum):
    """The status of an AWX job (`GET jobs/{id}/` `status`)."""

    NEW = "new"
    PENDING = "pending"
    WAITING = "waiting"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    ERROR = "error"
    CANCELED = "canceled"


AWX_ACTIVE = frozenset({AwxStatus.NEW, AwxStatus.PENDING, AwxStatus.WAITING, AwxStatus.RUNNING})
AWX_TERMINAL = frozenset({AwxStatus.SUCCESSFUL, AwxStatus.FAILED, AwxStatus.ERROR, AwxStatus.CANCELED})


class DeliveryState(StrEnum):
    """A webhook message in the outbox (`notifications.state`): waiting or retrying, sent, or a dead letter."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"
