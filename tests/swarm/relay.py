"""TCP relay of the swarm suite: listens on 0.0.0.0:8443 inside its own container (published on
the host's 127.0.0.1 only) and opens a new connection to TARGET:8443 (argv[1], resolved for each
connection) for each one it accepts. It joins the suite's attachable overlay network, where nginx
sees it as the client, by its own address: no NAT, no routing mesh between them."""

import asyncio
import sys

TARGET = sys.argv[1]
PORT = 8443


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
    try:
        upstream_r, upstream_w = await asyncio.open_connection(TARGET, PORT)
    except OSError as exc:
        print(f"relay: {TARGET}:{PORT}: {exc}", file=sys.stderr, flush=True)
        client_w.close()
        return
    await asyncio.gather(pump(client_r, upstream_w), pump(upstream_r, client_w))


async def main() -> None:
    server = await asyncio.start_server(handle, "0.0.0.0", PORT)  # noqa: S104 (its own container)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
