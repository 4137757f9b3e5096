"""The validation runner never waits without a bound: a load test that does not finish is
stopped at its timeout, and one whose version leaves validated is stopped at once."""

from __future__ import annotations

import asyncio

from handoff_agent.serving.validation import Validation, ValidationService, summary


class Stages:
    """The store door the watcher polls: the version's stage, as a test sets it."""

    def __init__(self, stage: str):
        self.stage = stage

    async def read(self, fn, *args):
        return self.stage


def service(stage: str) -> ValidationService:
    store = type("Store", (), {"version_stage": staticmethod(lambda vid: None)})()
    return ValidationService(
        Validation(), store, None, Stages(stage), None, None, None, None, "me", list, str,
        None, None,
    )  # fmt: skip


def test_a_load_test_that_hangs_is_stopped_at_its_timeout():
    async def main():
        never = asyncio.ensure_future(asyncio.sleep(3600))
        got = await service("validated")._watch(1, never, timeout=0.3)
        await asyncio.sleep(0)
        return got, never.cancelled()

    assert asyncio.run(main()) == ("timeout", True)


def test_a_version_that_leaves_validated_stops_its_load_test():
    async def main():
        never = asyncio.ensure_future(asyncio.sleep(3600))
        got = await service("approved")._watch(1, never, timeout=60)
        await asyncio.sleep(0)
        return got, never.cancelled()

    assert asyncio.run(main()) == ("approved", True)


def test_a_load_test_that_raises_is_the_runs_failure():
    async def main():
        async def broken():
            raise ConnectionError("the test slot went away")

        return await service("validated")._watch(1, asyncio.ensure_future(broken()), 60)

    try:
        asyncio.run(main())
    except ConnectionError as e:
        assert "went away" in str(e)
    else:
        raise AssertionError("the error was swallowed")


def test_summary_of_a_recorded_failure_names_the_gate():
    row = {
        "state": "done",
        "backend": "skops",
        "onnx": None,
        "conversion": {"converted": False, "reason": "text pipelines are served by skops"},
        "loadtest": {"failed": ["finished"]},
        "verdict": "fail",
        "reason": "the load test did not finish within 600 s",
        "queued": "t0",
        "finished": "t1",
    }
    out = summary(row)
    assert out["loadtest"]["failed"] == ["finished"] and out["loadtest"]["verdict"] == "fail"
    assert out["parity"]["converted"] is False and "text" in out["parity"]["reason"]
