"""A TCP proxy on a free port whose connections can go dead without closing, as when a NAT
entry is dropped or a host vanishes: bytes stop flowing both ways, no FIN, no RST. New
connections after that are forwarded as usual (a new flow gets a new NAT entry)."""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target``; :meth:`blackhole` silences the
    connections open at that moment."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self, first: int | None = None) -> int:
        """Stop forwarding on the connections open now (or on the ``first`` accepted only),
        keeping them open; return how many."""
        with self._lock:
            pairs = self._pairs[:first]
            for _, _, dead in pairs:
                dead.set()
            return len(pairs)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for client, upstream, _ in self._pairs:
                client.close()
                upstream.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            dead = threading.Event()
            with self._lock:
                self._pairs.append((client, upstream, dead))
            threading.Thread(target=self._pump, args=(client, upstream, dead), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, dead), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, destination: socket.socket, dead: threading.Event) -> None:
        """Copy ``source`` to ``destination``; once dead, read and drop, and never close."""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if dead.is_set():
                if not data:
                    return
                continue
            if not data:
                with contextlib.suppress(OSError):
                    destination.shutdown(socket.SHUT_WR)
                return
            try:
                destination.sendall(data)
            except OSError:
                return
