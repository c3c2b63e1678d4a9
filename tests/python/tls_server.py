"""A TLS front for a plain TCP backend (the upstreams of the TLS suites): accepts TLS with the
given certificate and relays the decrypted bytes to BACKEND. With --client-ca it requires a
client certificate signed by that CA. Prints "listening" once bound.

Usage: tls_server.py HOST PORT CERT KEY BACKEND_HOST BACKEND_PORT [--client-ca CA]
"""
import asyncio
import ssl
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - already gone
            pass


async def main():
    host, port, cert, key, bhost, bport = sys.argv[1:7]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    if "--client-ca" in sys.argv:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(sys.argv[sys.argv.index("--client-ca") + 1])

    async def handle(r, w):
        try:
            br, bw = await asyncio.open_connection(bhost, int(bport))
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, bw), pipe(br, w))

    server = await asyncio.start_server(handle, host, int(port), ssl=ctx)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
