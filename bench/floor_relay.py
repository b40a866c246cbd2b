"""The bare trio relay of the `paced-floor` scenario: the least a trio proxy can do per chunk.

    python bench/floor_relay.py --port 9000 --upstream 127.0.0.1:8081

Accept a connection, open one to the upstream, and copy bytes both ways (`receive_some`, then
`send_all`) until either side closes. No HTTP parsing, no pool, no events, no timing: each relayed
chunk costs trio's scheduling and two system calls, which is the floor Lectr's per-chunk cost is
measured against (issue 19). The client's request, Host header included, goes upstream as is
(nginx does not check it); a keep-alive client keeps its upstream connection.
"""

from __future__ import annotations

import argparse
import sys

import trio

_READ = 65536


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(_READ):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    done.cancel()  # one side ended: the exchange is over


async def _serve(client: trio.SocketStream, host: str, port: int) -> None:
    try:
        upstream = await trio.open_tcp_stream(host, port)
    except OSError:
        await client.aclose()
        return
    async with client, upstream, trio.open_nursery() as nursery:
        nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
        nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")

    async def handler(client: trio.SocketStream) -> None:
        await _serve(client, host, int(port))

    await trio.serve_tcp(handler, args.port, host="127.0.0.1", backlog=4096)


if __name__ == "__main__":
    trio.run(main, sys.argv[1:])
