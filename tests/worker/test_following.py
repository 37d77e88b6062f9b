"""Following jobs with one AWX request per job per poll: events first, statuses read together for many jobs."""

import collections
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from sqlmodel import Session, select

from core.db import get_engine
from core.inventory import get_catalog
from core.models import JobEvent, PatchRequest, utcnow
from core.settings import get_settings
from core.stage_map import get_stage_map
from worker import follow
from worker.awx_client import AWXClient, AWXError
from worker.job_status import DirectJobStatus, JobStatusBatch, JobStatuses


def _follower(client: AWXClient, statuses: JobStatuses, **settings) -> follow.Follower:
    return follow.Follower(client, statuses, get_settings().model_copy(update=settings), get_catalog(),
                           get_stage_map())


def _poll(request_id: str, client: AWXClient, statuses: JobStatuses) -> bool:
    return follow.poll(request_id, _follower(client, statuses))


def _claim(limit: int) -> list[follow.FollowTarget]:
    return follow.claim_due(limit, get_settings())


class ListingClient:
    """Stands in for AWXClient in the batch's unit tests: records each list and detail read."""

    def __init__(self, known: set[int]):
        self.known, self.lists, self.details = known, [], []

    def job_statuses(self, job_ids):
        self.lists.append(list(job_ids))
        return {j: {"id": j, "status": "running"} for j in job_ids if j in self.known}

    def get_job(self, job_id):
        self.details.append(job_id)
        raise AWXError(f"job {job_id} not found", kind="not_found", status_code=404)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_asks_within_an_interval_share_one_read():
    client, clock = ListingClient({1, 2, 3}), Clock()
    batch = JobStatusBatch(client, max_age=2.5, clock=clock)
    assert batch.get(1)["status"] == "running"
    clock.now += 0.5
    assert batch.get(2)["status"] == "running"  # not yet known: a read, which takes 1 along
    clock.now += 0.5
    assert batch.get(1)["status"] == "running" and batch.get(2)["status"] == "running"
    assert client.lists == [[1], [1, 2]]
    clock.now += 2.6  # the read of 1 and 2 is older than max_age now
    batch.get(3)
    assert client.lists[-1] == [1, 2, 3]
    assert batch.get(1) and batch.get(2) and len(client.lists) == 3
    assert batch.age(3) == pytest.approx(0.0) and batch.age(99) is None


def test_jobs_no_longer_asked_about_drop_out_of_the_read():
    client, clock = ListingClient({1, 2}), Clock()
    batch = JobStatusBatch(client, max_age=1.0, clock=clock)
    batch.get(1)
    for _ in range(6):  # only job 2 is followed from here on
        clock.now += 1.1
        batch.get(2)
    assert client.lists[-1] == [2]


def test_jobs_a_round_is_about_to_poll_are_read_together_on_the_first_ask():
    client, clock = ListingClient({1, 2, 3, 4}), Clock()
    batch = JobStatusBatch(client, max_age=2.5, clock=clock)
    batch.track([1, 2, 3, 4])
    for job_id in (3, 1, 4, 2):  # quiet jobs asking one after the other, as a round polls them
        clock.now += 0.1
        assert batch.get(job_id)["status"] == "running"
    assert client.lists == [[1, 2, 3, 4]]


def test_a_job_missing_from_the_list_is_read_in_full_for_the_reason():
    client = ListingClient(set())
    batch = JobStatusBatch(client, max_age=2.5, clock=Clock())
    with pytest.raises(AWXError) as raised:
        batch.get(7)
    assert raised.value.kind == "not_found" and client.details == [7]


def test_job_statuses_asks_by_id_200_a_request():
    seen: list[httpx.Request] = []

    def awx(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ids = [int(part) for part in request.url.params["id__in"].split(",")]
        return httpx.Response(200, json={"count": len(ids), "next": None, "previous": None,
                                         "results": [{"id": j, "status": "running"} for j in ids if j % 2]})

    with AWXClient("https://awx.example.com/api/v2/", "t", transport=httpx.MockTransport(awx)) as client:
        listed = client.job_statuses(list(range(1, 451)) + [3])
    assert [len(r.url.params["id__in"].split(",")) for r in seen] == [200, 200, 50]
    assert all(r.url.path == "/api/v2/jobs/" and r.url.params["page_size"] == "200" for r in seen)
    assert set(listed) == set(range(1, 451, 2))


def test_the_doubles_list_answers_id_in_without_event_processing_finished(db, stack_env, awx_double):
    with AWXClient.from_settings() as client:
        template = int(client.find_job_template("Patch Linux")["id"])
        ids = [client.launch(template, limit="web-01", extra_vars={"patchpilot_request_id": f"r{i}"}).job_id
               for i in range(3)]
        listed = client.job_statuses(ids[:2] + [999999])
    assert sorted(listed) == sorted(ids[:2])
    assert all("status" in job and "event_processing_finished" not in job for job in listed.values())


def _running_requests(client: AWXClient, count: int) -> list[str]:
    template = int(client.find_job_template("Patch Linux")["id"])
    made = []
    with Session(get_engine()) as session:
        for _ in range(count):
            req = PatchRequest(action="patch", hosts=["web-01", "web-02"], patch_group="Group-1",
                               requested_by="alice", approved_by="bob", state="running", started_at=utcnow())
            session.add(req)
            session.flush()
            req.awx_job_id = client.launch(template, limit="web-01,web-02",
                                           extra_vars={"patchpilot_request_id": req.id}).job_id
            made.append(req.id)
        session.commit()
    return made


def _follow_to_the_end(request_ids, client, statuses, poll_seconds=0.5, limit=90.0) -> tuple[int, int]:
    """Poll every request once per interval, as the Celery chains do, until none wants another poll.
    Returns (polls, intervals)."""
    pending, polls, rounds, deadline = set(request_ids), 0, 0, time.monotonic() + limit
    while pending and time.monotonic() < deadline:
        started, rounds = time.monotonic(), rounds + 1
        for request_id in sorted(pending):
            polls += 1
            if not _poll(request_id, client, statuses):
                with Session(get_engine()) as session:
                    if session.get(PatchRequest, request_id).state != "running":
                        pending.discard(request_id)
        time.sleep(max(0.0, poll_seconds - (time.monotonic() - started)))
    assert not pending, f"still running after {limit}s: {pending}"
    return polls, rounds


def _count_reads(client: AWXClient, monkeypatch) -> collections.Counter:
    """Counts the client's AWX requests by kind: events, list (the batched statuses), detail, other."""
    counts: collections.Counter = collections.Counter()
    send = client._send

    def counting(method, url, **kw):
        path = httpx.URL(url).path
        counts["events" if path.endswith("/job_events/") else "list" if path.endswith("/jobs/")
               else "detail" if "/jobs/" in path else "other"] += 1
        return send(method, url, **kw)

    monkeypatch.setattr(client, "_send", counting)
    return counts


@pytest.mark.integration
def test_many_jobs_followed_to_the_end_with_one_events_read_per_poll_and_a_shared_status_read(
        own_database, awx_double, monkeypatch):
    awx_double.scenario(job_seconds=60)
    with AWXClient.from_settings() as client:
        request_ids = _running_requests(client, 8)
        reads = _count_reads(client, monkeypatch)
        polls, rounds = _follow_to_the_end(request_ids, client, JobStatusBatch(client, max_age=0.5))
    with Session(get_engine()) as session:
        rows = [session.get(PatchRequest, r) for r in request_ids]
        assert {r.state for r in rows} == {"succeeded"} and {r.awx_status for r in rows} == {"successful"}
        for row in rows:
            counters = session.exec(select(JobEvent.counter).where(JobEvent.request_id == row.id)).all()
            assert sorted(counters) == list(range(1, len(counters) + 1)) and row.event_cursor == len(counters) > 0
    # One events read a poll (the end needs no extra sweep), the statuses of all eight jobs in about one list read
    # an interval, and one full read of each job at the end for event_processing_finished, which lists leave out.
    assert reads["events"] == polls and reads["other"] == 0, (dict(reads), polls)
    assert reads["list"] <= rounds + 3, (dict(reads), rounds)
    assert len(request_ids) <= reads["detail"] <= 2 * len(request_ids), dict(reads)


@pytest.mark.integration
def test_without_batching_each_poll_reads_the_job_and_its_events(own_database, awx_double, monkeypatch):
    """The same run through `DirectJobStatus`: the baseline the batch is measured against (two reads a poll)."""
    awx_double.scenario(job_seconds=30)
    with AWXClient.from_settings() as client:
        request_ids = _running_requests(client, 2)
        reads = _count_reads(client, monkeypatch)
        polls, _ = _follow_to_the_end(request_ids, client, DirectJobStatus(client))
    assert reads["list"] == 0 and reads["events"] >= polls and reads["detail"] >= polls - len(request_ids)


@pytest.mark.integration
def test_a_cancel_is_sent_from_the_batched_status(own_database, awx_double):
    awx_double.scenario(job_seconds=120)
    with AWXClient.from_settings() as client:
        [request_id] = _running_requests(client, 1)
        statuses = JobStatusBatch(client, max_age=0.5)
        time.sleep(0.6)
        assert _poll(request_id, client, statuses)
        with Session(get_engine()) as session:
            session.get(PatchRequest, request_id).cancel_requested_at = utcnow()
            session.commit()
        time.sleep(0.3)
        _follow_to_the_end([request_id], client, statuses)
    with Session(get_engine()) as session:
        assert session.get(PatchRequest, request_id).state == "canceled"


# --------------------------------------------------------------------------------------------- follow rounds


def _due_now(request_ids) -> None:
    from sqlalchemy import update

    with Session(get_engine()) as session:
        session.execute(update(PatchRequest).where(PatchRequest.id.in_(request_ids)).values(next_poll_at=None))
        session.commit()


@pytest.mark.integration
def test_two_workers_claim_disjoint_batches_and_a_claim_is_not_due_again_within_its_lease(own_database, awx_double):
    with AWXClient.from_settings() as client:
        request_ids = _running_requests(client, 5)
    first, second = _claim(3), _claim(3)
    assert len(first) == 3 and len(second) == 2
    assert {t.request_id for t in first} | {t.request_id for t in second} == set(request_ids)
    assert all(t.job_id and t.cursor == 0 and not t.cancel_wanted and not t.ending for t in first)
    assert _claim(10) == []  # all leased
    with Session(get_engine()) as session:
        session.get(PatchRequest, request_ids[0]).state = "canceled"
        session.commit()
    _due_now(request_ids)
    assert {t.request_id for t in _claim(10)} == set(request_ids[1:])  # only running ones


@pytest.mark.integration
def test_rounds_follow_jobs_to_the_end_and_a_lost_claim_comes_due_again(own_database, awx_double):
    awx_double.scenario(job_seconds=40)
    with AWXClient.from_settings() as client:
        request_ids = _running_requests(client, 4)
        lost = _claim(1)  # a round that died right after claiming: nothing polled
        follower = _follower(client, JobStatusBatch(client, max_age=0.5))
        deadline, rounds = time.monotonic() + 60, 0
        while time.monotonic() < deadline:
            with ThreadPoolExecutor(3) as pool:
                follow.follow_round(follower, budget_seconds=1.0, pool=pool)
            rounds += 1
            with Session(get_engine()) as session:
                states = {session.get(PatchRequest, r).state for r in request_ids}
            if states == {"succeeded"}:
                break
            time.sleep(0.1)
    assert states == {"succeeded"}, states
    with Session(get_engine()) as session:
        for request_id in request_ids:
            counters = session.exec(select(JobEvent.counter).where(JobEvent.request_id == request_id)).all()
            assert sorted(counters) == list(range(1, len(counters) + 1)) and len(counters) > 10
    assert lost[0].request_id in request_ids and rounds > 3


@pytest.mark.integration
def test_one_broken_job_does_not_stop_the_round_for_the_others(own_database, awx_double, monkeypatch):
    with AWXClient.from_settings() as client:
        request_ids = _running_requests(client, 3)
        with Session(get_engine()) as session:
            broken_job = session.get(PatchRequest, request_ids[0]).awx_job_id
        real_events = client.job_events

        def events(job_id, after_counter):
            if job_id == broken_job:
                raise ValueError("a page AWX should never send")
            return real_events(job_id, after_counter=after_counter)

        monkeypatch.setattr(client, "job_events", events)
        time.sleep(0.5)
        follower = _follower(client, JobStatusBatch(client, max_age=0.5))
        assert follow.follow_round(follower, budget_seconds=5) == (3, False)
    with Session(get_engine()) as session:
        polled = {r: session.get(PatchRequest, r).last_polled_at for r in request_ids}
    assert polled[request_ids[0]] is None and all(polled[r] is not None for r in request_ids[1:])


@pytest.mark.integration
def test_a_round_out_of_time_says_more_is_due_and_claims_are_left_for_the_next(own_database, awx_double):
    with AWXClient.from_settings() as client:
        request_ids = _running_requests(client, 5)
        time.sleep(0.5)
        follower = _follower(client, JobStatusBatch(client, max_age=0.5))
        polls, more_due = follow.follow_round(follower, budget_seconds=0.0001, batch=2)
        assert (polls, more_due) == (2, True)
        with ThreadPoolExecutor(2) as pool:
            polls, more_due = follow.follow_round(follower, budget_seconds=30, batch=2, pool=pool)
        assert (polls, more_due) == (3, False)
    with Session(get_engine()) as session:
        assert all(session.get(PatchRequest, r).last_polled_at is not None for r in request_ids)


# --------------------------------------------------------------------------------------------- first polls


class _NotStartedYet:
    """AWX while a job waits for its execution environment: pending, no events yet; then it starts."""

    def __init__(self):
        self.started = False

    def get_job(self, job_id):
        return {"id": job_id, "status": "running" if self.started else "pending"}

    def job_events(self, job_id, after_counter):
        if not self.started:
            return []
        return [{"counter": after_counter + 1, "event": "playbook_on_start"}]

    def cancel(self, job_id):
        return True


def _running_request(awx_job_id: int) -> str:
    with Session(get_engine()) as session:
        req = PatchRequest(action="patch", hosts=["web-01"], patch_group="Group-1", requested_by="alice",
                           approved_by="bob", state="running", started_at=utcnow(), awx_job_id=awx_job_id)
        session.add(req)
        session.commit()
        return req.id


def _pause_after_poll(request_id: str) -> float:
    """Seconds from the last poll to the next one scheduled; the last poll is then moved back in time, as if the
    next one had come due."""
    with Session(get_engine()) as session:
        req = session.get(PatchRequest, request_id)
        pause = (req.next_poll_at - req.last_polled_at).total_seconds()
        req.last_polled_at -= timedelta(seconds=10)
        session.commit()
    return pause


@pytest.mark.integration
def test_after_the_first_poll_a_job_is_polled_at_the_contracts_cadence_even_before_its_first_event(db, stack_env):
    """AWX's contract: one job is not polled more often than every 2 to 3 s. Only the first poll comes early."""
    awx = _NotStartedYet()
    follower = follow.Follower(awx, DirectJobStatus(awx), get_settings().model_copy(
        update={"first_poll_seconds": 0.7, "follow_poll_seconds": 2.5}), get_catalog(), get_stage_map())
    request_id = _running_request(90001)
    assert follow.poll(request_id, follower)  # the first poll finds the job pending, no events
    assert _pause_after_poll(request_id) == pytest.approx(2.5, abs=0.01)
    awx.started = True
    assert follow.poll(request_id, follower)
    assert _pause_after_poll(request_id) == pytest.approx(2.5, abs=0.01)
    with Session(get_engine()) as session:
        req = session.get(PatchRequest, request_id)
        assert req.event_cursor == 1 and req.awx_status == "running"


def test_the_first_poll_pause_is_never_longer_than_the_normal_one():
    settings = get_settings().model_copy(update={"first_poll_seconds": 1.0, "follow_poll_seconds": 2.5})
    assert follow.first_poll_in(settings) == 1.0
    slow = settings.model_copy(update={"first_poll_seconds": 5.0})
    assert follow.first_poll_in(slow) == 2.5
