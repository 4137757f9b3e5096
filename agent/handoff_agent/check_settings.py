"""The settings a check takes: the one rule, read from what each check declares (``defaults``).

A check's ``defaults`` are the whole list of its settings, and each default's type is the
type its value must have (``plugins.Check``). The same rule refuses a push's ``--gate``
override up front (``gate.GatePolicy.validate_overrides``) and makes a check with a bad
threshold from the agent's configuration an error in its worker (``worker``).

The agent never imports a check, so it asks a sandboxed worker once what the checks declare
(``DeclaredSettings``); ``python -I -m handoff_agent.check_settings`` is that worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import sys

log = logging.getLogger("handoff_agent")

MODULE = "handoff_agent.check_settings"
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce(value, default):
    """``value`` as the type of ``default``, when it is text from a command line."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    text = value.strip()
    if isinstance(default, bool):
        return text.lower() in TRUE_WORDS
    if text.lower() in ("none", "null", ""):
        return None
    try:
        number = float(text)
    except ValueError:
        return value
    return int(number) if isinstance(default, int) and number.is_integer() else number


def unfit(value, default) -> str | None:
    """What ``value`` should be when ``coerce`` cannot make it the type of ``default`` ("a
    number", "true or false"); None when it can, or when the default says nothing (None,
    text)."""
    if isinstance(default, bool):
        words = TRUE_WORDS + FALSE_WORDS
        fits = isinstance(value, bool) or str(value).strip().lower() in words
        return None if fits else "true or false"
    if isinstance(default, (int, float)):
        got = coerce(value, default)
        # NaN compares false with everything: a threshold of NaN would pass every value
        fits = isinstance(got, (int, float)) and not isinstance(got, bool) and got == got
        return None if fits else "a number"
    return None


def setting_key(defaults: dict, key: str) -> str:
    """``dp_diff`` also names ``max_dp_diff``."""
    return f"max_{key}" if key not in defaults and f"max_{key}" in defaults else key


def settings_problem(name: str, defaults: dict | None, given: dict, where: str) -> str | None:
    """Why ``given`` does not fit check ``name``'s declared ``defaults``, in one line: a
    setting it does not have (and the ones it has), or a value not of its type; None when it
    fits, or when the check declares none (it takes anything). ``where``: where ``given``
    came from, as the user wrote it."""
    if not defaults:
        return None
    for key, value in given.items():
        key = setting_key(defaults, key)
        if key not in defaults:
            return f"{name} has no setting {key!r} ({where}). Its settings: {', '.join(defaults)}."
        kind = unfit(value, defaults[key])
        if kind:
            return f"{name}.{key} must be {kind}, not {value!r} ({where})."
    return None


# -- in the agent -----------------------------------------------------------------------------


class DeclaredSettings:
    """What the agent's checks declare, learned from a sandboxed worker at the first push
    that overrides a setting (most pushes do not, and an agent start spawns nothing more),
    then kept: the checks do not change while the agent runs. Unknown (None) when the worker
    cannot tell; a bad override is then still an error of its check, in its worker."""

    def __init__(self, sandbox, limits, entry_points: dict[str, str], timeout: float):
        self.sandbox, self.limits, self.timeout = sandbox, limits, timeout
        self.entry_points = dict(entry_points)
        self.loop: asyncio.AbstractEventLoop | None = None  # the agent's, once it runs
        self._task: asyncio.Future | None = None

    async def learn(self) -> dict[str, dict] | None:
        """check name -> its declared defaults (JSON); one worker for concurrent callers."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._ask())
        task = self._task
        found = await asyncio.shield(task)
        if found is None and self._task is task:
            self._task = None  # asked again at the next push that needs it
        return found

    async def _ask(self) -> dict[str, dict] | None:
        job = {"checks": self.entry_points}
        run = await self.sandbox.run_once(MODULE, self.limits, job, {}, self.timeout)
        result = run.result or {}
        if run.error is None and result.get("ok"):
            return result["settings"]
        why = run.error or result.get("error") or f"exit code {run.code}: {run.stderr[-300:]}"
        log.warning("could not learn the checks' settings (--gate is checked later): %s", why)
        return None

    async def close(self) -> None:
        """The agent is stopping: end a worker still being asked (a push waiting for it goes
        on, its overrides then checked by their checks)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def settings(self) -> dict[str, dict] | None:
        """``learn`` from a thread (the ingest's, off the event loop); None on the loop's own
        thread, where waiting would stop the loop it waits for."""
        if self.loop is None or self.loop.is_closed():
            return None
        try:
            asyncio.get_running_loop()
            return None
        except RuntimeError:
            pass
        future = asyncio.run_coroutine_threadsafe(self.learn(), self.loop)
        try:
            return future.result(self.timeout + 30)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
        except Exception:  # a push goes on without them, never a 500
            log.exception("learning the checks' settings failed")
        return None


# -- in the worker ----------------------------------------------------------------------------


def _jsonable(value):
    """A default as JSON; one that is not keeps its text (a text default takes anything)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def describe(job: dict) -> dict:
    """Each check's declared defaults, as the check worker builds the check. A check that
    does not import is left out (its own worker says why)."""
    from .plugins import resolve

    found = {}
    for name, entry_point in job["checks"].items():
        try:
            check = resolve(entry_point)
            check = check() if isinstance(check, type) else check
            defaults = getattr(check, "defaults", None) or {}
            found[name] = {str(k): _jsonable(v) for k, v in dict(defaults).items()}
        except Exception as e:
            print(f"check {name!r} did not load: {type(e).__name__}: {e}", file=sys.stderr)
    return {"ok": True, "settings": found}


def main() -> int:
    from .sandbox import serve_one_job

    return serve_one_job(describe)


if __name__ == "__main__":
    sys.exit(main())
