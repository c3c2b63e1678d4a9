"""An MCP server built with the official Python SDK (`mcp`), for nodegate's end-to-end tests.

Usage:
  mcp_server.py NAME http HOST PORT     streamable HTTP at /mcp (answers both protocol eras)
  mcp_server.py NAME sse HOST PORT      the 2024-11-05 HTTP+SSE transport (/sse)
  mcp_server.py NAME stdio              stdio
  mcp_server.py NAME garbage HOST PORT  an HTTP server that answers every POST with non-JSON
  mcp_server.py NAME hang HOST PORT     an HTTP server that accepts POSTs and never answers them

Its tools are the ones policy rules are written about: files and repositories, with arguments
worth constraining. Every answer names the server (NAME), so a test can tell where a call went.
"""
import asyncio
import sys
from typing import Annotated

import mcp_types as types

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Resolve, Sample


def build(name: str) -> MCPServer:
    m = MCPServer(name)

    @m.tool()
    def read_file(path: str) -> str:
        """Read a file (the test server answers with the path it was asked for)."""
        return f"{name} read {path}"

    @m.tool()
    def delete_file(path: str) -> str:
        """Delete a file."""
        return f"{name} deleted {path}"

    @m.tool()
    def get_file(repo: str, path: str) -> str:
        """Read a file from a repository."""
        return f"{name} {repo}:{path}"

    @m.tool()
    def whoami() -> str:
        """Name this server."""
        return name

    @m.tool()
    def seen_auth(ctx: Context) -> str:
        """The Authorization header this server received (credential injection checks)."""
        return (ctx.headers or {}).get("authorization", "none")

    @m.tool()
    def fail() -> str:
        """Always raises: a tool-level error."""
        raise ValueError("this tool always fails")

    @m.tool()
    async def add_tool(tool_name: str, ctx: Context) -> str:
        """Adds a tool at run time and announces that the tool list changed."""
        m.add_tool(lambda: f"{name} {tool_name}", name=tool_name, description="added at run time")
        await ctx.notify_tools_changed()
        return "added"

    @m.tool()
    async def slow(steps: int, ctx: Context) -> str:
        """Reports progress `steps` times, 50 ms apart."""
        for i in range(steps):
            await ctx.report_progress(i + 1, steps, f"step {i + 1}")
            await asyncio.sleep(0.05)
        return f"{name} done after {steps} steps"

    @m.tool()
    async def wait(seconds: float, marker: str) -> str:
        """Sleeps; if the call is cancelled first, writes `marker` (a file path) and stops."""
        try:
            await asyncio.sleep(seconds)
            return "waited"
        except asyncio.CancelledError:
            with open(marker, "w") as f:
                f.write("cancelled")
            raise

    def ask_model(question: str) -> Sample:
        return Sample([types.SamplingMessage(role="user", content=types.TextContent(type="text", text=question))], max_tokens=16)

    @m.tool()
    def summarise(question: str, answer: Annotated[types.CreateMessageResult, Resolve(ask_model)]) -> str:
        """Asks the client's model (sampling): a server-to-client request in the handshake era,
        an input_required round trip in 2026-07-28."""
        return f"{name} was told: {answer.content.text}"

    @m.prompt()
    def review(code: str) -> str:
        """Ask for a code review."""
        return f"{name}: please review {code}"

    @m.resource(f"file:///{name}/readme")
    def readme() -> str:
        return f"readme of {name}"

    return m


async def garbage(host: str, port: int, hang: bool) -> None:
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if not head.startswith(b"POST"):
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                if hang:
                    await asyncio.sleep(3600)
                body = b"<html>this is not JSON-RPC</html>"
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except Exception:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    name, mode = sys.argv[1], sys.argv[2]
    if mode in ("garbage", "hang"):
        asyncio.run(garbage(sys.argv[3], int(sys.argv[4]), mode == "hang"))
        return
    m = build(name)
    if mode == "stdio":
        m.run("stdio")
    elif mode == "sse":
        m.run("sse", host=sys.argv[3], port=int(sys.argv[4]))
    else:
        m.run("streamable-http", host=sys.argv[3], port=int(sys.argv[4]))


if __name__ == "__main__":
    main()
