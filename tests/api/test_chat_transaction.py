"""A chat turn is one transaction: the conversation's row lock is held from its first read to its single commit,
so concurrent messages in one conversation queue instead of each replacing the same open proposal."""

import pytest
from conftest import bearer

pytestmark = pytest.mark.integration


def test_a_turn_that_replaces_the_open_proposal_commits_once(api):
    from sqlalchemy import event
    from sqlmodel import Session

    first = api.post("/api/v1/chat", json={"text": "Patch dev-web-01 with Group-1"}, headers=bearer("alice")).json()
    commits = []
    listener = lambda session: commits.append(session)  # noqa: E731
    event.listen(Session, "after_commit", listener)
    try:
        second = api.post("/api/v1/chat", json={"conversation_id": first["conversation_id"],
                                                "text": "Patch dev-web-01 with Group-2"}, headers=bearer("alice"))
    finally:
        event.remove(Session, "after_commit", listener)
    assert second.status_code == 200 and second.json()["proposal"]["patch_group"] == "Group-2"
    # The token lookup commits its last_used_at on its own session; the turn itself commits exactly once.
    assert len({id(s) for s in commits}) - 1 == 1 and len(commits) == 2, len(commits)
    old = api.get(f"/api/v1/requests/{first['proposal']['id']}").json()
    assert old["state"] == "rejected"
