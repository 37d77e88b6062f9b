"""The UI's way into an api pod in proxy mode: a byte-for-byte TCP relay from the pod's address to the API, which
listens on 127.0.0.1 only. The NetworkPolicy patchpilot-api-from-ui admits only the ui pods to this port; the
router reaches the pod only through the OAuth proxy (8443). Run by the patchpilot-backend image (no dependencies):

    python3 relay.py LISTEN_HOST:PORT UPSTREAM_HOST:PORT
"""

from __future__ import annotations

import asyncio
import sys


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a half-close is passed on; the other direction keeps flowing
    except (ConnectionError, OSError):
        writer.close()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def serve(listen: str, upstream: str, started: asyncio.Future | None = None) -> None:
    upstream_host, upstream_port = _address(upstream)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            await _close(client_writer)  # the API is not listening (yet): the client sees a closed connection
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
        await asyncio.gather(_close(upstream_writer), _close(client_writer))

    host, port = _address(listen)
    server = await asyncio.start_server(handle, host, port)
    if started is not None:
        started.set_result(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
