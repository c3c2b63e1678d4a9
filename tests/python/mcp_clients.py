"""Drives nodegate's MCP endpoint (or an MCP server directly) with the official Python SDK.

Usage: mcp_clients.py SCENARIO MODE URL KEY [ARGS...]
  MODE is the SDK's connect mode: `auto` (2026-07-28, falling back to the handshake) or
  `legacy` (the 2025-11-25 initialize handshake). KEY is sent as a bearer token ("-": none).
Prints one JSON object with what the SDK returned (or raised). The Rust end-to-end suite
(tests/e2e/mcp.rs) starts the gateway and the servers and asserts on this output.
"""
import asyncio
import json
import os
import sys

import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def connect(mode, url, key, **kw):
    headers = {} if key == "-" else {"Authorization": f"Bearer {key}"}
    transport = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    return Client(transport, mode=mode, **kw)


def err(e):
    error = getattr(e, "error", None)
    return {"raised": type(e).__name__, "code": getattr(error, "code", None), "message": str(e),
            "data": getattr(error, "data", None)}


def result(r):
    texts = [c.text for c in r.content if getattr(c, "type", "") == "text"]
    return {"text": texts[0] if texts else None, "is_error": r.is_error}


async def lists(c, args):
    tools = await c.list_tools()
    prompts = await c.list_prompts()
    resources = await c.list_resources()
    return {"tools": sorted(t.name for t in tools.tools), "prompts": sorted(p.name for p in prompts.prompts),
            "resources": sorted(str(r.uri) for r in resources.resources), "tools_meta": tools.meta}


async def call(c, args):
    name, arguments = args[0], json.loads(args[1]) if len(args) > 1 else {}
    return result(await c.call_tool(name, arguments))


async def calls(c, args):
    """Several calls on one connection: [[name, args], ...]."""
    out = []
    for name, arguments in json.loads(args[0]):
        try:
            out.append(result(await c.call_tool(name, arguments)))
        except Exception as e:  # noqa: BLE001 - reported to the test
            out.append(err(e))
    return {"results": out}


async def read(c, args):
    r = await c.read_resource(args[0])
    return {"uri": str(r.contents[0].uri), "text": getattr(r.contents[0], "text", None)}


async def prompt(c, args):
    r = await c.get_prompt(args[0], json.loads(args[1]) if len(args) > 1 else {})
    return {"text": r.messages[0].content.text}


async def progress(c, args):
    seen = []

    async def on_progress(p, total, message):
        seen.append(p)

    r = await c.call_tool(args[0], json.loads(args[1]), progress_callback=on_progress)
    return {**result(r), "progress": seen}


async def pages(c, args):
    names, cursor, n = [], None, 0
    while True:
        r = await c.list_tools(cursor=cursor)
        names += [t.name for t in r.tools]
        n += 1
        cursor = r.next_cursor
        if not cursor:
            break
    return {"tools": names, "pages": n}


async def cancel(c, args):
    """Starts a call, gives up on it after 1 s (the SDK cancels it), keeps the session a while."""
    try:
        await c.call_tool(args[0], json.loads(args[1]), read_timeout_seconds=1.0)
        outcome = "completed"
    except Exception as e:  # noqa: BLE001 - the timeout is the point
        outcome = type(e).__name__
    await asyncio.sleep(2)
    return {"outcome": outcome}


SCENARIOS = {"lists": lists, "call": call, "calls": calls, "read": read, "prompt": prompt,
             "progress": progress, "pages": pages, "cancel": cancel}


async def sampling(mode, url, key, args):
    """A server asks this client to sample; the client answers, the tool returns it."""
    asked = []

    async def on_sample(ctx, params):
        asked.append(params.messages[0].content.text)
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="sampled by the client"), model="test-model")

    async with connect(mode, url, key, sampling_callback=on_sample) as c:
        r = await c.call_tool(args[0], json.loads(args[1]))
        return {**result(r), "asked": asked, "all_text": [getattr(x, "text", None) for x in r.content]}


async def elicit(mode, url, key, args):
    """A server asks this client's user for input (elicitation); the client accepts with a name."""
    asked = []

    async def on_elicit(ctx, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})

    async with connect(mode, url, key, elicitation_callback=on_elicit) as c:
        r = await c.call_tool(args[0], json.loads(args[1]))
        return {**result(r), "asked": asked, "all_text": [getattr(x, "text", None) for x in r.content]}


async def list_changed(mode, url, key, args):
    """Adds a tool through one call and waits for the list_changed notification: on the GET
    stream (handshake era) or a subscriptions/listen stream (2026-07-28)."""
    changed = asyncio.Event()

    async def on_message(m):
        if isinstance(m, types.ToolListChangedNotification):
            changed.set()

    async with connect(mode, url, key, message_handler=on_message) as c:
        before = sorted(t.name for t in (await c.list_tools()).tools)
        notified = False
        if mode == "legacy":
            await c.call_tool(args[0], {"tool_name": args[1]})
            try:
                await asyncio.wait_for(changed.wait(), 10)
                notified = True
            except asyncio.TimeoutError:
                pass
        else:
            async with c.listen(tools_list_changed=True) as sub:
                await c.call_tool(args[0], {"tool_name": args[1]})
                try:
                    event = await asyncio.wait_for(sub.__anext__(), 10)
                    notified = type(event).__name__
                except asyncio.TimeoutError:
                    pass
        after = sorted(t.name for t in (await c.list_tools()).tools)
        return {"notified": notified, "before": before, "after": after}


async def session_restart(mode, url, key, args):
    """One session across a gateway restart: call, say so, wait for the go file, call again."""
    flag, ready = args[0], args[1]
    async with connect("legacy", url, key) as c:
        first = result(await c.call_tool(args[2], {}))
        open(ready, "w").write("ready")
        for _ in range(600):
            if os.path.exists(flag):
                break
            await asyncio.sleep(0.05)
        second = result(await c.call_tool(args[2], {}))
        return {"first": first, "second": second}


async def main():
    scenario, mode, url, key, *args = sys.argv[1:]
    try:
        if scenario == "sampling":
            out = await sampling(mode, url, key, args)
        elif scenario == "elicit":
            out = await elicit(mode, url, key, args)
        elif scenario == "list_changed":
            out = await list_changed(mode, url, key, args)
        elif scenario == "session_restart":
            out = await session_restart(mode, url, key, args)
        else:
            async with connect(mode, url, key) as c:
                out = await SCENARIOS[scenario](c, args)
    except Exception as e:  # noqa: BLE001 - reported to the test
        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        out = err(e)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    asyncio.run(main())
