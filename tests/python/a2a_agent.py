#!/usr/bin/env python3
"""An A2A agent built on the official SDK (a2a-sdk 1.x) for nodegate's tests.

a2a_agent.py --listen 127.0.0.1:18600 --name echo [--binding JSONRPC|HTTP+JSON] [--compat-0.3] [--v03-only]

Skills (by the text's first word): `echo` answers with the text it was sent, as a completed task with one artifact;
`slow` works for --slow-seconds (streaming a status update every 0.2 s) and can be cancelled;
`hang` goes quiet after its first events and never finishes.
The card is served at /.well-known/agent-card.json; its interface URL is the listen address.
--binding HTTP+JSON serves the REST binding only (no JSON-RPC); --v03-only makes an agent of the
0.3 generation: a 0.3 card (`url`, `protocolVersion: 0.3`) and only 0.3 method names answered
(through the SDK's own 0.3 compatibility layer; 1.0 names get -32601 Method not found).
Prints one JSON line {"listen": ...} when ready.
"""
import argparse
import asyncio
import json

import uvicorn
from starlette.applications import Starlette

from a2a.helpers.proto_helpers import new_task
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes, create_rest_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
    TaskState,
)


class Agent(AgentExecutor):
    def __init__(self, slow_seconds):
        self.slow_seconds = slow_seconds

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input() or ""
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        if not context.current_task:
            await event_queue.enqueue_event(
                new_task(context.task_id, context.context_id, TaskState.TASK_STATE_SUBMITTED, history=[context.message])
            )
        await updater.start_work()
        if text.startswith("hang"):
            # Stops sending events mid-stream and never finishes.
            await asyncio.sleep(3600)
        if text.startswith("slow"):
            steps = int(self.slow_seconds / 0.2)
            for i in range(steps):
                await asyncio.sleep(0.2)
                await updater.update_status(
                    TaskState.TASK_STATE_WORKING,
                    message=updater.new_agent_message([Part(text=f"step {i}")]),
                )
        await updater.add_artifact([Part(text=f"echo: {text}")], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--name", default="echo")
    ap.add_argument("--binding", default="JSONRPC")
    ap.add_argument("--compat-0.3", dest="compat", action="store_true")
    ap.add_argument("--v03-only", dest="v03_only", action="store_true")
    ap.add_argument("--slow-seconds", type=float, default=5.0)
    ap.add_argument("--log-headers", default=None, help="append each request's Authorization header to this file")
    ap.add_argument("--url", default=None, help="the interface URL the card advertises (default: http://LISTEN)")
    ap.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (PEM) ...")
    ap.add_argument("--tls-key", default=None, help="... and this key")
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    scheme = "https" if args.tls_cert else "http"
    url = args.url or f"{scheme}://{args.listen}"
    card = AgentCard(
        name=args.name,
        description=f"test agent {args.name}",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding=args.binding, protocol_version="0.3" if args.v03_only else "1.0")
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(id="echo", name="echo", description="echoes", tags=["echo"]),
            AgentSkill(id="slow", name="slow", description="works slowly", tags=["slow"]),
        ],
    )
    handler = DefaultRequestHandler(agent_executor=Agent(args.slow_seconds), task_store=InMemoryTaskStore(), agent_card=card)
    if args.v03_only:
        from a2a.compat.v0_3.conversions import to_compat_agent_card
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        old_card = to_compat_agent_card(card).model_dump(by_alias=True, exclude_none=True, mode="json")

        async def serve_card(request):
            return JSONResponse(old_card)

        routes = [Route("/.well-known/agent-card.json", serve_card, methods=["GET"])]
        routes += create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True)
    else:
        routes = create_agent_card_routes(card)
        if args.binding == "JSONRPC":
            routes += create_jsonrpc_routes(handler, "/", enable_v0_3_compat=args.compat)
        else:
            routes += create_rest_routes(handler)
    app = Starlette(routes=routes)
    if args.v03_only:
        v03_app = app

        async def app(scope, receive, send):  # a 0.3 agent: 1.0 method names are unknown to it
            if scope["type"] != "http" or scope["method"] != "POST":
                return await v03_app(scope, receive, send)
            chunks, more = [], True
            while more:
                m = await receive()
                chunks.append(m.get("body", b""))
                more = m.get("more_body", False)
            body = b"".join(chunks)
            try:
                req = json.loads(body)
            except ValueError:
                req = {}
            if isinstance(req, dict) and "/" not in str(req.get("method", "/")):
                err = {"jsonrpc": "2.0", "id": req.get("id"), "error": {"code": -32601, "message": "Method not found"}}
                out = json.dumps(err).encode()
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
                return await send({"type": "http.response.body", "body": out})
            sent = False

            async def replay():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await v03_app(scope, replay, send)
    if args.log_headers:
        inner = app

        async def app(scope, receive, send):  # what nodegate passed on, for the tests to read
            if scope["type"] == "http":
                auth = dict(scope["headers"]).get(b"authorization", b"").decode()
                with open(args.log_headers, "a") as f:
                    f.write(json.dumps({"path": scope["path"], "authorization": auth}) + "\n")
            await inner(scope, receive, send)
    print(json.dumps({"listen": args.listen}), flush=True)
    uvicorn.run(app, host=host, port=int(port), log_level="warning", ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)


if __name__ == "__main__":
    main()
