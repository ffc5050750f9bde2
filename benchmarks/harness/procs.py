"""Processes of a run: started (pinned to a core, if asked), measured from /proc, always
stopped; and the two servers the runs start in particular, ``redis-server`` (``Redis``, which
can be killed and started again on its port) and a gunicorn master followed through its log
(``Gunicorn``: its port, its live workers, a reload, a killed worker).

Every process is started in a session of its own (``setsid``), so that stopping it stops
its children too (gunicorn's workers), and is remembered in one registry; ``stop_all``
ends whatever is left, and the runner calls it in a ``finally``, at exit and on SIGINT or
SIGTERM, so that no server outlives a run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import random
import re
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
    "Gunicorn",
    "Proc",
    "Redis",
    "Sentinels",
    "alive",
    "core_busy_seconds",
    "cpu_seconds",
    "free_port",
    "listen_backlog",
    "rss_bytes",
    "session_pids",
    "start",
    "stop_all",
    "tcp_counters",
    "wait_for",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

_RUNNING: list[Proc] = []
_LOCK = threading.Lock()
_T = t.TypeVar("_T")


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
                raise TimeoutError(
                    f"{self.name} exited (status {self.popen.wait()}) before a '{prefix}' line"
                )
            if line.startswith(prefix):
                return line

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 2.0) -> None:
        """SIGTERM the process's whole session, then SIGKILL what is left after ``grace``."""
        self._signal_session(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        # Children (gunicorn workers) may outlive the leader; kill the session regardless.
        deadline = time.monotonic() + grace
        while session_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill(grace)

    def kill(self, wait: float = 2.0) -> None:
        """SIGKILL the process's whole session at once, the way a crash ends it; wait up to
        ``wait`` seconds for the leader to go, and forget it (``stop_all`` is done with it)."""
        self._signal_session(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=wait)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with _LOCK:
            if self in _RUNNING:
                _RUNNING.remove(self)

    def _signal_session(self, signum: int) -> None:
        # The leader through Popen, which signals no process once it has reaped it (its pid
        # may have been given to another); the rest through /proc.
        self.popen.send_signal(signum)
        for pid in session_pids(self.pid):
            if pid == self.pid:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)


def start(
    name: str,
    argv: list[str],
    *,
    cpu: int | None,
    env: t.Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    interactive: bool = False,
) -> Proc:
    """Start ``argv`` with the open-files limit raised to the hard limit.

    :param cpu: the core to pin it to, or None to leave it on every core this process has.
    :param log: file for standard output and error (``interactive`` keeps standard output
        as a pipe read line by line, and takes standard input from a pipe).
    """

    def prepare() -> None:
        if cpu is not None:
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


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process and not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


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


def listen_backlog(port: int) -> int | None:
    """The accept queue's length limit of the socket listening on 127.0.0.1:``port``, as the
    kernel applies it (the backlog asked for, capped at net.core.somaxconn): the Send-Q
    column of ``ss``; None if ``ss`` is missing or nothing listens there."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10
        ).stdout.split()
        if len(out) >= 3:
            return int(out[2])
    return None


#: /proc/net/netstat TcpExt counters a listen queue's overflow moves
TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "TCPReqQFullDrop")


def tcp_counters() -> dict[str, int]:
    """:data:`TCP_COUNTERS` from /proc/net/netstat: counts since boot, for the whole host."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()]
    for names, values in itertools.pairwise(lines):
        if names[0] == "TcpExt:" and values[0] == "TcpExt:":
            counters = dict(zip(names[1:], values[1:]))
            return {name: int(counters.get(name, 0)) for name in TCP_COUNTERS}
    return dict.fromkeys(TCP_COUNTERS, 0)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: t.Callable[[], _T | None], timeout: float, what: str) -> _T:
    """Poll ``predicate`` until it returns something true, and return that.

    :raises RuntimeError: if it has not after ``timeout`` seconds; ``what`` says what was
        awaited ("timed out after 15 s waiting for redis-server to answer PING").
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class Redis:
    """``redis-server`` on a port of 127.0.0.1 chosen once, keeping nothing on disk: a restart
    (``kill``, then ``start``) comes back empty, on the same port, at the same ``url``."""

    def __init__(self, log: Path, *, cpu: int | None = None, args: t.Sequence[str] = ()) -> None:
        self.log = log
        self.cpu = cpu
        #: More options for redis-server (``--replicaof HOST PORT`` for a replica).
        self.args = list(args)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None

    def start(self, timeout: float = 15.0) -> Proc:
        """Start redis-server (again) and return it once it answers PING.

        :raises RuntimeError: if it exits or does not answer within ``timeout`` seconds,
            with the end of its log.
        """
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.log.parent), "--maxclients", "19000", "--loglevel", "warning", "--daemonize", "no",
                *self.args]  # fmt: skip
        proc = self.proc = start("redis", argv, cpu=self.cpu, log=self.log)

        def pong() -> bool:
            if not proc.alive():
                raise RuntimeError(f"redis-server exited at start (status {proc.popen.returncode})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(64).startswith(b"+PONG")
            except OSError:
                return False

        try:
            wait_for(pong, timeout, "redis-server to answer PING")
        except RuntimeError as e:
            proc.stop()
            raise RuntimeError(f"{e}; its log ends:\n{proc.log_tail()}") from None
        return proc

    def kill(self) -> None:
        """SIGKILL redis-server: what it held is gone."""
        if self.proc is not None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class Sentinels:
    """A Redis primary, a replica of it, and three Sentinels watching them (quorum 2) that fail
    over quickly (the primary is down after 300 ms), on free ports of 127.0.0.1; ``url`` is the
    ``redis+sentinel://`` URL of the service."""

    service = "primary"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.primary = Redis(directory / "primary.log")
        self.primary.start()
        replicaof = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica = Redis(directory / "replica.log", args=replicaof)
        self.replica.start()
        wait_for(lambda: self._linked(self.replica), 20, "the replica to sync")
        self.ports = [free_port() for _ in range(3)]
        self.sentinels = []
        for port in self.ports:
            config = directory / f"sentinel-{port}.conf"  # Sentinel rewrites its own
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.service} 300\n"
                f"sentinel failover-timeout {self.service} 3000\n"
            )
            argv = ["redis-server", str(config), "--sentinel"]
            log = directory / f"sentinel-{port}.log"
            self.sentinels.append(start("sentinel", argv, cpu=None, log=log))
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        self.url = f"redis+sentinel://{hosts}/{self.service}"
        wait_for(self._watching, 20, "the Sentinels to know the replica and each other")

    def fail_over(self) -> None:
        """SIGKILL the primary; once the Sentinels name the replica as the primary, start the
        old one again, empty, as a replica of the new (as Sentinel would reconfigure it, only
        sooner); return once it replicates."""
        self.primary.kill()
        wait_for(lambda: self._primary_port() == self.replica.port, 30, "the promotion")
        self.primary.args = ["--replicaof", "127.0.0.1", str(self.replica.port)]
        self.primary.start()
        wait_for(lambda: self._linked(self.primary), 30, "the old primary to replicate")

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.stop()
        self.replica.stop()
        self.primary.stop()

    def _primary_port(self) -> int | None:
        import redis

        with contextlib.suppress(redis.RedisError):
            address = redis.Redis(port=self.ports[0]).sentinel_get_master_addr_by_name(self.service)
            return int(address[1]) if address else None
        return None

    def _watching(self) -> bool:
        import redis

        with contextlib.suppress(redis.RedisError):
            for port in self.ports:
                sentinel = redis.Redis(port=port, decode_responses=True)
                others = sentinel.sentinel_sentinels(self.service)
                if not sentinel.sentinel_slaves(self.service) or len(others) < 2:
                    return False
            return True
        return False

    @staticmethod
    def _linked(server: Redis) -> bool:
        """Whether ``server`` replicates its primary."""
        import redis

        with contextlib.suppress(redis.RedisError):
            return bool(
                redis.Redis(port=server.port).info("replication").get("master_link_status") == "up"
            )
        return False


class Gunicorn:
    """A gunicorn master started on port 0 (``--bind 127.0.0.1:0``), followed through its log:
    the port from its ``Listening at:`` line, the live workers from their ``Worker ready (pid:
    N)`` lines (which sse-flask's ``post_worker_init`` writes) and ``Worker exiting`` lines.

    Returns once the master listens and ``workers`` workers are ready.

    :raises RuntimeError: if the master exits first, or either takes too long.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        workers: int,
        log: Path,
        env: t.Mapping[str, str] | None = None,
        cwd: Path | None = None,
        cpu: int | None = None,
    ) -> None:
        self.workers = workers
        self.log = log
        self.proc = start(name, argv, cpu=cpu, env=env, cwd=cwd, log=log)
        try:
            self.port = int(wait_for(self._listening, 30, "gunicorn to listen").group(1))
            wait_for(
                lambda: len(self.worker_pids()) >= workers, 60, f"{workers} workers to be ready"
            )
        except BaseException:
            self.stop()
            raise

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Workers that logged "Worker ready", have not logged "Worker exiting", and live."""
        log = self.log_text()
        exited = {int(pid) for pid in re.findall(r"Worker exiting \(pid: (\d+)\)", log)}
        ready = [int(pid) for pid in re.findall(r"Worker ready \(pid: (\d+)\)", log)]
        return [pid for pid in ready if pid not in exited and alive(pid)]

    def rss(self) -> int:
        """Resident bytes of the master and its workers."""
        return rss_bytes(session_pids(self.proc.pid))

    def reload(self) -> None:
        """Graceful reload (SIGHUP): new workers boot, then the old ones stop."""
        old = set(self.worker_pids())
        self.proc.popen.send_signal(signal.SIGHUP)
        wait_for(
            lambda: not old & set(self.worker_pids()) and len(self.worker_pids()) >= self.workers,
            60,
            "the reload",
        )

    def kill_worker(self) -> int:
        """SIGKILL one worker, chosen at random; return its pid once gunicorn has a
        replacement ready."""
        victim = random.choice(self.worker_pids())
        os.kill(victim, signal.SIGKILL)
        wait_for(
            lambda: victim not in self.worker_pids() and len(self.worker_pids()) >= self.workers,
            60,
            "a replacement worker",
        )
        return victim

    def stop(self) -> None:
        """SIGTERM the master and its workers; SIGKILL what is left 15 s later."""
        self.proc.stop(grace=15)

    def _listening(self) -> re.Match[str] | None:
        if not self.proc.alive():
            raise RuntimeError(
                f"the server exited with {self.proc.popen.returncode}:\n{self.log_text()[-3000:]}"
            )
        return re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log_text())
