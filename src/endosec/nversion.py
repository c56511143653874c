"""In-process N-version programming: run equivalent callables on one input and vote.

The mimic boundary here is a function call. Each *version* is an independent implementation of
the same function; every call is fanned out to all of them, each return value becomes an
`Output`, and the arbiter's `Ballot` decides. A version that raises, returns something that
cannot be encoded, or overruns the timeout is a failed voter, never a value.

    parse = NVersion({"orjson": orjson.loads, "simplejson": simplejson.loads,
                      "ujson": ujson.loads})
    doc = parse(b'{"a": 1}')          # the agreed value, or NoConsensus with the verdict

**Encoding.** Votes compare bytes, so each return value is encoded first. The default encoding is
deterministic and injective on its domain (so a version cannot pass off a different value as the
agreed one): ``bytes``-like values are compared as-is (so byte canonicalisers such as `TextRule`
see the payload itself); ``None``, ``bool``, ``int``, ``float`` (NaN and infinities included),
``str``, lists, tuples and ``dict``s with ``str`` keys are compared as compact JSON with sorted
keys and ASCII escapes (so `JsonRule` applies). The two families never agree with each other (the
family is the output's ``head``); tuples agree with lists of the same items. Anything else is a
``MALFORMED`` failure: pass ``encode=`` to compare other types (its bytes are then taken as-is).

**Execution.** ``executor="inline"`` calls sync versions one after another in the caller's
thread; ``"thread"`` runs each in its own thread; ``"process"`` runs each in its own worker
process (``spawn`` start method; a version that kills its process fails alone and its worker is
replaced; versions, arguments and results must be picklable, so use top-level functions). The
sync entry points (`NVersion.__call__`, `NVersion.vote`) wait for every version, up to the
timeout, and accept only sync versions. The async ones (`NVersion.acall`, `NVersion.avote`) run
async versions concurrently on the event loop and sync ones in threads (in their worker
processes under ``"process"``). `NVersion.acall` answers as soon as the ballot is decided; the
stragglers are still judged, and the final verdict goes to ``on_verdict``.

**Timeouts.** A running Python callable cannot be interrupted. Inline, a version that returns
after ``timeout`` seconds is counted as timed out; in threads and processes the vote stops
waiting for it, but it keeps its thread or worker until it returns (under ``"process"`` its
next calls queue behind it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import multiprocessing
import pickle
import time
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Literal

from endosec.core.arbiter import Ballot, Majority, Strategy
from endosec.core.canonicalise import ExactBytes
from endosec.core.model import Canonicaliser, ErrorKind, Output, Verdict
from endosec.tasks import spawn

__all__ = ["ExecutorKind", "NVersion", "NoConsensus"]

ExecutorKind = Literal["inline", "thread", "process"]

_BYTES_HEAD = "bytes"
_JSON_HEAD = "json"


class NoConsensus(Exception):
    """The versions did not agree: fail closed, with the verdict and each version's error."""

    def __init__(self, verdict: Verdict, errors: Mapping[str, BaseException]) -> None:
        failed = ", ".join(f"{name}: {_describe(errors.get(name))}" for name in verdict.failed)
        detail = f" (failed: {failed})" if failed else ""
        super().__init__(f"no consensus: {verdict.reason}{detail}")
        self.verdict = verdict
        self.errors: dict[str, BaseException] = dict(errors)


class NVersion:
    """Run functionally equivalent callables on the same input and return their consensus.

    **Parameters:**

    * **versions** - name to callable; each name is a voter.
    * **strategy** - the arbiter's strategy (default `Majority`).
    * **canonicaliser** - how encoded values are compared (default exact bytes).
    * **encode** - value to bytes; default as described in the module docstring.
    * **timeout** - seconds each version may take; ``None`` waits for ever.
    * **executor** - ``"inline"``, ``"thread"`` or ``"process"`` for sync versions.
    * **weights** - per-version weights for a trust-weighted strategy.
    * **on_verdict** - called with every final verdict (after the stragglers are judged). After
      `acall` has answered it runs in a background task, so what it raises goes to the event
      loop's exception handler.
    """

    def __init__(
        self,
        versions: Mapping[str, Callable[..., Any]],
        *,
        strategy: Strategy | None = None,
        canonicaliser: Canonicaliser | None = None,
        encode: Callable[[Any], bytes] | None = None,
        timeout: float | None = None,
        executor: ExecutorKind = "inline",
        weights: Mapping[str, float] | None = None,
        on_verdict: Callable[[Verdict], object] | None = None,
    ) -> None:
        if not versions:
            raise ValueError("versions: at least one version is needed")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout: must be a positive number of seconds, got {timeout!r}")
        if executor not in ("inline", "thread", "process"):
            raise ValueError(f"executor: must be 'inline', 'thread' or 'process', got {executor!r}")
        self.versions: dict[str, Callable[..., Any]] = dict(versions)
        self.strategy: Strategy = strategy if strategy is not None else Majority()
        self.canonicaliser: Canonicaliser = canonicaliser or ExactBytes()
        self.encode = encode
        self.timeout = timeout
        self.executor: ExecutorKind = executor
        self.weights = dict(weights) if weights is not None else None
        self.on_verdict = on_verdict
        self._async = frozenset(n for n, fn in self.versions.items() if _is_async(fn))
        self._pools: dict[str, concurrent.futures.ProcessPoolExecutor] = {}
        if executor == "process":
            for name, fn in self.versions.items():
                if name not in self._async:
                    _check_picklable(name, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run every version and return the winner's own return value, or raise NoConsensus."""
        round_, verdict = self._run(args, kwargs)
        return round_.answer(verdict)

    def vote(self, *args: Any, **kwargs: Any) -> Verdict:
        """Run every version and return the full verdict (never raises NoConsensus)."""
        return self._run(args, kwargs)[1]

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Like calling, but answer once the ballot is decided; stragglers are judged later."""
        round_ = self._round()
        decided: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        judge = spawn(self._judge(round_, args, kwargs, decided), name="nversion:judge")
        try:
            await asyncio.wait((decided, judge), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            judge.cancel()
            raise
        verdict = decided.result() if decided.done() else judge.result()
        return round_.answer(verdict)

    async def avote(self, *args: Any, **kwargs: Any) -> Verdict:
        """Run every version concurrently and return the final verdict once all are judged."""
        return await self._judge(self._round(), args, kwargs, None)

    def close(self) -> None:
        """Stop the worker processes, if any were started; the object stays usable.

        Waits for work already running in them, including versions that timed out.
        """
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> NVersion:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _round(self) -> _Round:
        ballot = Ballot(self.strategy, tuple(self.versions), self.weights)
        return _Round(ballot, self.canonicaliser, self.encode, self.timeout)

    def _finish(self, round_: _Round) -> Verdict:
        final = round_.close()
        if self.on_verdict is not None:
            self.on_verdict(final)
        return final

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_Round, Verdict]:
        if self._async:
            names = ", ".join(sorted(self._async))
            raise TypeError(f"async versions ({names}) need `await acall(...)` or `avote(...)`")
        round_ = self._round()
        if self.executor == "inline":
            for name, fn in self.versions.items():
                round_.add(name, _timed(fn, args, kwargs))
            return round_, self._finish(round_)
        if self.executor == "process":
            self._collect(round_, {self._submit(name, fn, args, kwargs): name
                                   for name, fn in self.versions.items()})
        else:
            threads = concurrent.futures.ThreadPoolExecutor(len(self.versions), "nversion")
            try:
                self._collect(round_, {threads.submit(_timed, fn, args, kwargs): name
                                       for name, fn in self.versions.items()})
            finally:
                threads.shutdown(wait=False, cancel_futures=True)
        return round_, self._finish(round_)

    def _collect(self, round_: _Round,
                 futures: Mapping[concurrent.futures.Future[_Result], str]) -> None:
        try:
            for future in concurrent.futures.as_completed(futures, self.timeout):
                round_.add(futures[future], _result_of(future))
        except TimeoutError:
            pass  # close() counts whoever has not answered as timed out

    async def _judge(self, round_: _Round, args: tuple[Any, ...], kwargs: dict[str, Any],
                     decided: asyncio.Future[Verdict] | None) -> Verdict:
        """Feed each version's result to the ballot; resolve ``decided`` as soon as it is."""
        tasks = [spawn(self._one(name, fn, args, kwargs), name=f"nversion:{name}")
                 for name, fn in self.versions.items()]
        try:
            for next_done in asyncio.as_completed(tasks):
                name, result = await next_done
                early = round_.add(name, result)
                if early is not None and decided is not None and not decided.done():
                    decided.set_result(early)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        final = self._finish(round_)
        if decided is not None and not decided.done():
            decided.set_result(final)
        return final

    async def _one(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> tuple[str, _Result]:
        start = time.perf_counter()
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                if name in self._async:
                    value = await fn(*args, **kwargs)
                elif self.executor == "process":
                    future = self._submit(name, fn, args, kwargs)
                    return name, await asyncio.wrap_future(future)
                else:
                    return name, await asyncio.to_thread(_timed, fn, args, kwargs)
        except TimeoutError as exc:
            if deadline.expired():
                return name, _Result(time.perf_counter() - start, timed_out=True)
            return name, _Result(time.perf_counter() - start, error=exc)
        except Exception as exc:
            return name, _Result(time.perf_counter() - start, error=exc)
        return name, _Result(time.perf_counter() - start, value=value)

    def _submit(self, name: str, fn: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> concurrent.futures.Future[_Result]:
        """Run one version in its own worker process, so that a worker dying fails only it.

        A pool whose worker died is broken for good: it is replaced on the next call.
        """
        pool = self._pools.get(name)
        if pool is not None:
            try:
                return pool.submit(_timed, fn, args, kwargs)
            except BrokenProcessPool:
                pool.shutdown(wait=False)
        context = multiprocessing.get_context("spawn")
        pool = self._pools[name] = concurrent.futures.ProcessPoolExecutor(1, context)
        return pool.submit(_timed, fn, args, kwargs)


@dataclass(frozen=True, slots=True)
class _Result:
    """What running one version gave: a value, an exception, or nothing in time."""

    latency: float
    value: Any = None
    error: BaseException | None = None
    timed_out: bool = False


@dataclass(slots=True)
class _Round:
    """One call's ballot, plus the versions' own values and errors the verdict does not hold."""

    ballot: Ballot
    canonicaliser: Canonicaliser
    encode: Callable[[Any], bytes] | None
    timeout: float | None
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, BaseException] = field(default_factory=dict)

    def add(self, name: str, result: _Result) -> Verdict | None:
        latency = max(result.latency, 0.0)
        if result.timed_out or (self.timeout is not None and latency > self.timeout):
            self.errors[name] = TimeoutError(f"{name} took longer than {self.timeout} s")
            return self.ballot.add(Output.failure(name, ErrorKind.TIMEOUT, self.canonicaliser,
                                                  latency))
        if result.error is not None:
            self.errors[name] = result.error
            return self.ballot.add(Output.failure(name, ErrorKind.CRASH, self.canonicaliser,
                                                  latency))
        try:
            head, raw = _encode_default(result.value) if self.encode is None else (
                (), self.encode(result.value))
        except Exception as exc:
            self.errors[name] = exc
            return self.ballot.add(Output.failure(name, ErrorKind.MALFORMED, self.canonicaliser,
                                                  latency))
        self.values[name] = result.value
        return self.ballot.add(Output(name, raw, self.canonicaliser, head=head, latency=latency))

    def close(self) -> Verdict:
        for name in self.ballot.pending:
            self.errors.setdefault(name, TimeoutError(f"{name} did not answer in time"))
        return self.ballot.close()

    def answer(self, verdict: Verdict) -> Any:
        if verdict.winner is None:
            raise NoConsensus(verdict, self.errors)
        return self.values[verdict.winner.executor]


def _timed(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Result:
    """Run one sync version where it is executed (inline, thread or worker process)."""
    start = time.perf_counter()
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:
        return _Result(time.perf_counter() - start, error=exc)
    return _Result(time.perf_counter() - start, value=value)


def _result_of(future: concurrent.futures.Future[_Result]) -> _Result:
    """A finished future's result; failing to ship it back (pickling, dead worker) is a crash."""
    try:
        return future.result()
    except Exception as exc:
        return _Result(0.0, error=exc)


def _encode_default(value: object) -> tuple[str, bytes]:
    if isinstance(value, bytes | bytearray | memoryview):
        return _BYTES_HEAD, bytes(value)
    _check_json(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _JSON_HEAD, text.encode("ascii")


def _check_json(value: object) -> None:
    """Refuse what JSON would encode lossily (non-str keys) or not at all."""
    if value is None or isinstance(value, str | int | float):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"dict key {key!r} is not a str; pass encode= to compare it")
            _check_json(item)
        return
    raise TypeError(f"no default encoding for {type(value).__name__}; pass encode=")


def _is_async(fn: Callable[..., Any]) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _check_picklable(name: str, fn: Callable[..., Any]) -> None:
    try:
        pickle.dumps(fn)
    except Exception as exc:
        raise ValueError(f"versions[{name!r}]: process executor needs a picklable, top-level "
                         f"callable ({exc})") from exc


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no answer"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
