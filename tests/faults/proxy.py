"""A TCP fault proxy on 127.0.0.1: forwards to a real server and breaks connections on purpose.

Each accepted connection takes the next planned `Fault` (then `default`, normally pass):

- pass: forward both ways untouched;
- drop: after `after` bytes in `direction`, close both sides cleanly (FIN), mid-transfer;
- reset: after `after` bytes, close both sides with an RST (SO_LINGER 0);
- stall: after `after` bytes, stop forwarding for `seconds`, then go on (or close with `then_close`).

Bytes are counted per connection, in the fault's direction: "up" is client -> server (an upload,
a POST body), "down" is server -> client (an answer). Threads, not asyncio: the code under test
is synchronous and runs in this process or a child.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Fault:
    kind: str = "pass"  # pass, drop, reset, stall
    after: int = 0  # bytes forwarded in `direction` before the fault fires
    direction: str = "up"  # up: client -> server; down: server -> client
    seconds: float = 0.0  # stall length
    then_close: bool = False  # stall: close after the stall instead of resuming


@dataclass
class ConnStats:
    fault: Fault
    up: int = 0
    down: int = 0
    fired: bool = False
    opened: float = field(default_factory=time.monotonic)


class FaultProxy:
    """Listen on 127.0.0.1:<port>, forward to target; `plan(...)` the faults of the next connections."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.default = Fault()
        self.connections: list[ConnStats] = []
        self._plan: list[Fault] = []
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._thread.start()

    def plan(self, *faults: Fault) -> None:
        """The next len(faults) connections get these faults, in order."""
        with self._lock:
            self._plan.extend(faults)

    @property
    def fired(self) -> int:
        return sum(1 for c in self.connections if c.fired)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()
        with self._lock:
            socks, self._socks = list(self._socks), set()
        for s in socks:
            _close(s)

    # -- internals ---------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client, reset=True)
                continue
            for s in (client, server):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                fault = self._plan.pop(0) if self._plan else self.default
                stats = ConnStats(fault)
                self.connections.append(stats)
                self._socks.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, stats), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket, stats: ConnStats) -> None:
        """One thread per connection, select() over both sockets: a fault never races a blocked reader."""
        fault = stats.fault
        peer = {client: server, server: client}
        direction = {client: "up", server: "down"}
        open_ = {client, server}  # sides that have not sent EOF yet
        try:
            while open_ and not self._stop.is_set():
                ready, _, _ = select.select(list(open_), [], [], 0.2)
                for src in ready:
                    dst, way = peer[src], direction[src]
                    data = src.recv(65536)
                    if not data:
                        open_.discard(src)
                        dst.shutdown(socket.SHUT_WR)  # pass the EOF on
                        continue
                    if fault.kind != "pass" and fault.direction == way and not stats.fired:
                        room = fault.after - (stats.up if way == "up" else stats.down)
                        if room < len(data):
                            head = data[: max(room, 0)]
                            dst.sendall(head)
                            self._count(stats, way, len(head))
                            stats.fired = True
                            if fault.kind != "stall" or fault.then_close:
                                if fault.kind == "stall":
                                    time.sleep(fault.seconds)
                                return self._kill(client, server, reset=fault.kind == "reset")
                            time.sleep(fault.seconds)  # nothing moves either way meanwhile
                            data = data[len(head):]
                    dst.sendall(data)
                    self._count(stats, way, len(data))
        except OSError:
            pass
        self._kill(client, server, reset=False)

    def _count(self, stats: ConnStats, direction: str, n: int) -> None:
        if direction == "up":
            stats.up += n
        else:
            stats.down += n

    def _kill(self, client, server, reset: bool) -> None:
        for s in (client, server):
            _close(s, reset)
        with self._lock:
            self._socks.difference_update((client, server))


def _close(s: socket.socket, reset: bool = False) -> None:
    try:
        if reset:
            # SO_LINGER on with a zero timeout: close() sends an RST instead of a FIN.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
