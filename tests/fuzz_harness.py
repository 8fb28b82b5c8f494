"""Crash-proof execution of fuzz cases for the ``tests/test_fuzz_*.py`` suites.

A case is plain data (a dict drawn by hypothesis in the test process). It runs in a long-lived
worker process (``python fuzz_harness.py``), fed over a pipe, so that a segfault, an abort or a
hang kills the worker, not pytest: the test then fails with the input that crashed it, and the
next case gets a fresh worker. Many cases share one worker (starting one costs an import of torch).

Every case function (``module:function``, importable from ``tests/``) builds its tensors from the
case, calls the op and compares with the oracle itself; it returns None, or raises. The test then
requires: for a valid input, no exception; for an invalid one, a ``ValueError``, ``RuntimeError``
or ``TypeError`` whose message names the op and one of the arguments made invalid.
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ALLOWED_ERRORS = ("ValueError", "RuntimeError", "TypeError")
CASE_TIMEOUT_S = 120


def _write(stream, obj) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _read(stream):
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(n))


class Worker:
    """A worker process that runs cases; restarted after a crash or a hang."""

    def __init__(self):
        self.proc = None

    def _start(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fuzz_harness.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env)

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, function: str, case: dict):
        """``("ok", None)``, ``("raised", (type name, message))``, ``("crash", exit code)`` or
        ``("hang", None)``."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        try:
            _write(self.proc.stdin, (function, case))
            ready, _, _ = select.select([self.proc.stdout], [], [], CASE_TIMEOUT_S)
            if not ready:
                self.close()
                return "hang", None
            return _read(self.proc.stdout)
        except (EOFError, BrokenPipeError):
            code = self.proc.wait()
            self.proc = None
            return "crash", code


def check(worker: Worker, function: str, case: dict, op, invalid: list[str]) -> None:
    """Runs ``case`` and asserts the contract: ``invalid`` lists the arguments the draw made
    invalid (empty: the input is valid and the result must equal the oracle). ``op`` is the op's
    name, or a tuple of names that may answer (a compat function and the op it calls)."""
    ops = (op,) if isinstance(op, str) else tuple(op)
    status, payload = worker.run(function, case)
    if status in ("crash", "hang"):
        pytest.fail(f"{op} {status}ed (exit code {payload}) on {case}")
    if not invalid:
        if status == "raised":
            pytest.fail(f"{op} failed on a valid input: {payload[0]}: {payload[1]}\ncase: {case}")
        return
    if status == "ok":
        pytest.fail(f"{op} accepted an invalid input ({', '.join(invalid)}): {case}")
    kind, message = payload
    assert kind in ALLOWED_ERRORS, f"{op}: {kind}: {message}\ncase: {case}"
    assert any(name in message for name in ops), f"the message names none of {ops}: {message!r}\ncase: {case}"
    assert any(name in message for name in invalid), (
        f"the message names none of {invalid}: {message!r}\ncase: {case}")


def long_run_only(request) -> None:
    """The long fuzz runs are opt-in: ``pytest -m slow``."""
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long fuzz run: select it with -m slow")


def _serve() -> None:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # the pipe carries only results
    cache = {}
    while True:
        try:
            function, case = _read(sys.stdin.buffer)
        except EOFError:
            return
        if function not in cache:
            module, name = function.split(":")
            cache[function] = getattr(importlib.import_module(module), name)
        try:
            cache[function](case)
            result = ("ok", None)
        except Exception as e:  # reported to the test, which judges it
            result = ("raised", (type(e).__name__, str(e)))
        _write(out, result)


if __name__ == "__main__":
    _serve()
