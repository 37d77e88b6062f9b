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


def test_concurrent_turns_in_one_conversation_leave_exactly_one_open_proposal(api):
    """Each turn holds the conversation's row lock until its one commit, so turns that each replace the open
    proposal queue instead of all rejecting the same one and leaving several open."""
    import threading

    from sqlalchemy import select
    from sqlmodel import Session

    from core.db import get_engine
    from core.models import Conversation, PatchRequest

    first = api.post("/api/v1/chat", json={"text": "Patch dev-web-01 with Group-1"}, headers=bearer("alice")).json()
    conversation_id = first["conversation_id"]
    texts = ["Patch dev-web-01 with Group-2", "Patch dev-web-01 with Group-1 as a dry run",
             "Patch dev-app-01 with Group-1", "Patch dev-db-01 with Group-1", "Patch dev-app-01 with Group-2",
             "Patch dev-web-01 with Group-2 as a dry run"]
    barrier = threading.Barrier(len(texts))
    codes: list[int] = []

    def send(text: str) -> None:
        barrier.wait()
        codes.append(api.post("/api/v1/chat", json={"conversation_id": conversation_id, "text": text},
                              headers=bearer("alice")).status_code)

    threads = [threading.Thread(target=send, args=(text,)) for text in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert codes == [200] * len(texts)
    with Session(get_engine()) as session:
        states = session.execute(select(PatchRequest.id, PatchRequest.state)
                                 .where(PatchRequest.conversation_id == conversation_id)).all()
        open_id = session.get(Conversation, conversation_id).open_request_id
    assert len(states) == 1 + len(texts)
    assert [request_id for request_id, state in states if state == "proposed"] == [open_id]
