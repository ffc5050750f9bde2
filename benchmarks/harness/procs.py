"""Processes of a run: started pinned to a core, measured from /proc, always stopped.

Every process is started in a session of its own (``setsid``), so that stopping it stops
its children too (gunicorn's workers), and is remembered in one registry; ``stop_all``
ends whatever is left, and the runner calls it in a ``finally``, at exit and on SIGINT or
SIGTERM, so that no server outlives a run.
"""

from __future__ import annotations

import os
import queue
import resource
import signal
import socket
import subprocess
import threading
import time
import typing as t
from pathlib import Path

__all__ = [
    "CLOCK_TICKS",
    "Proc",
    "core_busy_seconds",
    "cpu_seconds",
    "free_port",
    "rss_bytes",
    "session_pids",
    "start",
    "stop_all",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_RUNNING: list[Proc] = []
_LOCK = threading.Lock()


class Proc:
    """A started process, with its output in a log file or read line by line."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path | None) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self.lines: queue.Queue[str | None] = queue.Queue()
        if popen.stdout is not None:
            threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def expect(self, prefix: str, timeout: float) -> str:
        """Return the next output line starting with ``prefix``, skipping others.

        :raises TimeoutError: if none comes within ``timeout`` seconds or the output ends.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no '{prefix}' line within {timeout:g} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise TimeoutError(f"{self.name} exited (status {self.popen.wait()}) before a '{prefix}' line")
            if line.startswith(prefix):
                return line

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM the process's whole session, then SIGKILL what is left after ``grace``."""
        _signal_session(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        # Children (gunicorn workers) may outlive the leader; kill the session regardless.
        deadline = time.monotonic() + grace
        while session_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _signal_session(self.pid, signal.SIGKILL)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        with _LOCK:
            if self in _RUNNING:
                _RUNNING.remove(self)

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)


def start(
    name: str,
    argv: list[str],
    *,
    cpu: int,
    env: t.Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    interactive: bool = False,
) -> Proc:
    """Start ``argv`` pinned to ``cpu`` with the open-files limit raised to the hard limit.

    :param log: file for standard output and error (``interactive`` keeps standard output
        as a pipe read line by line, and takes standard input from a pipe).
    """

    def prepare() -> None:
        os.sched_setaffinity(0, {cpu})
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    log_file = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE if interactive else log_file,
            stderr=log_file,
            start_new_session=True,
            preexec_fn=prepare,
        )
    finally:
        if log is not None:
            t.cast(t.IO[bytes], log_file).close()
    proc = Proc(name, popen, log)
    with _LOCK:
        _RUNNING.append(proc)
    return proc


def stop_all() -> None:
    """Stop every process started and not yet stopped, newest first."""
    with _LOCK:
        running = list(reversed(_RUNNING))
    for proc in running:
        proc.stop(grace=3.0)


def _signal_session(sid: int, signum: int) -> None:
    for pid in session_pids(sid) or [sid]:
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    return text[text.rindex(")") + 2 :].split()


def session_pids(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (its leader and every descendant that kept it)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields[0] is the state, [3] the session id.
        if fields is not None and fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: t.Iterable[int]) -> float:
    """User plus system CPU time of ``pids``, in seconds (utime and stime of /proc/PID/stat)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def core_busy_seconds(cpu: int) -> float:
    """Seconds core ``cpu`` has been busy (not idle nor waiting for I/O) since boot, from
    /proc/stat: includes interrupts, softirqs (loopback TCP) and any other process."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            # user nice system idle iowait irq softirq steal: busy is user to softirq less
            # idle and iowait (steal is time the hypervisor took, not ours to count).
            ticks = [int(v) for v in line.split()[1:8]]
            return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS
    return 0.0


def rss_bytes(pids: t.Iterable[int]) -> int:
    """The sum of VmRSS of ``pids`` (from /proc/PID/status), in bytes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            pass
    return total


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
