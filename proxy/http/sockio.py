"""Socket reads and writes for the per-chunk path of a stream, without trio's per-call extras.

A relayed stream chunk is one read from the provider and one write to the client. Through trio's
`SocketStream` each costs a generator-based context manager (error translation), a conflict
detector, and (for a write that the socket takes at once, the usual case) a pass through trio's
scheduler after the system call. Measured on a paced stream (`bench/run.py --scenario
paced-floor`, docs/PERFORMANCE.md step 18) those were ~10 µs of the ~80 µs a chunk cost. Here:

- `send_all` writes with a plain non-blocking `send`; it waits (`wait_writable`, a checkpoint) only
  when the socket's buffer is full. A write the socket takes at once does not yield: the task's
  next read does.
- `receive_some` reads with a plain non-blocking `recv`; when nothing is there yet it waits
  (`wait_readable`), and when data was there at once it still passes a checkpoint (so a fast
  provider cannot starve the other tasks, and cancellation is seen).

Both take the standard-library socket under a trio socket (`raw`); errors are the OS's (`OSError`,
with `BlockingIOError` handled here), or `trio.ClosedResourceError` when another task closed the
socket while this one waited.
"""

from __future__ import annotations

import socket

import trio

_checkpoint = trio.lowlevel.checkpoint
_wait_readable = trio.lowlevel.wait_readable
_wait_writable = trio.lowlevel.wait_writable


def raw(trio_socket: trio.socket.SocketType) -> socket.socket:
    """The standard-library socket under a trio socket. trio keeps it private (`_sock`): if that
    changes, this fails loudly here rather than quietly taking a slower path."""
    sock = trio_socket._sock  # type: ignore[attr-defined]
    assert isinstance(sock, socket.socket)
    return sock


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Write all of `data` (see the module docstring)."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)
    while sent < len(data):
        await _wait_writable(sock)
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            pass


async def receive_some(sock: socket.socket, size: int) -> bytes:
    """Up to `size` bytes, b"" at EOF (see the module docstring)."""
    try:
        data = sock.recv(size)
    except BlockingIOError:
        pass
    else:
        await _checkpoint()
        return data
    while True:
        await _wait_readable(sock)
        try:
            return sock.recv(size)
        except BlockingIOError:
            continue
