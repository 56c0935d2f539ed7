"""Admission policy: newcomers join a running batch in groups, never starve."""

from __future__ import annotations

from model.sampling import DecodingParams
from service.engine.config import EngineConfig
from service.engine.request import Job, Sequence, TaskInput
from service.engine.scheduler import Scheduler


def queued(n: int) -> list[Sequence]:
    job = Job(TaskInput("translate", "Hi", target_lang="de"), model="m", version="1",
              protocol="test", priority=0, deadline=None, stream=False,
              sink=lambda *event: None)
    params = DecodingParams(max_new_tokens=8)
    job.sequences = [Sequence(job=job, index=i, source_ids=[5, 6, 7], params=params)
                     for i in range(n)]
    return job.sequences


def scheduler(**config: object) -> Scheduler:
    return Scheduler(EngineConfig(**{"waiting_served_ratio": 0.3, "max_waiting_steps": 3,
                                     **config}))  # type: ignore[arg-type]


def test_an_idle_engine_admits_at_once() -> None:
    s = scheduler()
    s.add(queued(1))
    assert len(s.admit(0, 0)) == 1


def test_a_lone_newcomer_waits_for_company_at_most_max_waiting_steps() -> None:
    s = scheduler()
    s.add(queued(2))
    assert [len(s.admit(20, 200)) for _ in range(4)] == [0, 0, 0, 2]
    s.add(queued(1))  # the count starts again for the next group
    assert [len(s.admit(22, 220)) for _ in range(4)] == [0, 0, 0, 1]


def test_a_fair_share_of_the_running_rows_is_admitted_at_once() -> None:
    s = scheduler()
    s.add(queued(6))  # 0.3 x 20 running rows
    assert len(s.admit(20, 200)) == 6


def test_newcomers_that_fill_the_free_rows_are_admitted_at_once() -> None:
    s = scheduler()
    s.add(queued(4))  # 60 of 64 rows running: 4 fill the batch
    assert len(s.admit(60, 600)) == 4


def test_zero_max_waiting_steps_admits_every_newcomer_at_once() -> None:
    s = scheduler(max_waiting_steps=0)
    s.add(queued(1))
    assert len(s.admit(40, 400)) == 1
