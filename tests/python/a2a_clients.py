#!/usr/bin/env python3
"""The official A2A SDK (a2a-sdk 1.x) as a client, for nodegate's tests. Prints one JSON line.

a2a_clients.py URL SCENARIO [--key KEY] [--task ID] [--push-url URL] [--binding B] [--v03]

URL is the agent's base (its card is URL/.well-known/agent-card.json, fetched by the SDK);
--key is sent as `Authorization: Bearer KEY` (nodegate's API key for the caller).
Scenarios: card, send, stream, start (send, returning at once), subscribe, get, cancel, list, push.
--binding HTTP+JSON makes the client use the card's REST interface (default: JSON-RPC);
--skill S names the skill a sent message asks for (in its metadata); --v03 makes it a 0.3 client: only the card's 0.3 interfaces are kept, so the SDK talks through its
0.3 compatibility transport (0.3 method names and shapes on the wire).
"""
import argparse
import asyncio
import json
import uuid

import httpx

from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import A2ACardResolver
from a2a.types import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
)
from google.protobuf.json_format import MessageToDict


def message(text, skill=None):
    m = Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)])
    if skill:
        m.metadata.update({"skill": skill})  # where nodegate reads the skill a message asks for
    return m


async def run(args):
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        if args.scenario == "card":
            card = await A2ACardResolver(http, args.url).get_agent_card()
            return {"card": MessageToDict(card)}
        card = await A2ACardResolver(http, args.url).get_agent_card()
        if args.v03:
            keep = [i for i in card.supported_interfaces if i.protocol_version.startswith("0.")]
            del card.supported_interfaces[:]
            card.supported_interfaces.extend(keep)
        config = ClientConfig(
            streaming=args.scenario in ("stream", "subscribe"),
            httpx_client=http,
            supported_protocol_bindings=[args.binding],
        )
        client = await create_client(card, client_config=config)
        if args.scenario in ("send", "stream"):
            events = []
            async for ev in client.send_message(SendMessageRequest(message=message(args.text, args.skill))):
                events.append(MessageToDict(ev))
            task = next((e["task"] for e in reversed(events) if "task" in e), None)
            states = [e.get("statusUpdate", e.get("task", {})).get("status", {}).get("state") for e in events]
            texts = [p.get("text") for e in events for a in e.get("task", {}).get("artifacts", []) + [e.get("artifactUpdate", {}).get("artifact", {})] for p in a.get("parts", [])]
            task_id = (task or {}).get("id") or next((e.get("statusUpdate", {}).get("taskId") for e in events if "statusUpdate" in e), None)
            return {"task_id": task_id, "states": states, "texts": [t for t in texts if t], "events": len(events)}
        if args.scenario == "start":
            req = SendMessageRequest(message=message(args.text), configuration=SendMessageConfiguration(return_immediately=True))
            async for ev in client.send_message(req):
                d = MessageToDict(ev)
                return {"task_id": d.get("task", {}).get("id"), "state": d.get("task", {}).get("status", {}).get("state")}
            return {"error": "no answer"}
        if args.scenario == "subscribe":
            states = []
            async for ev in client.subscribe(SubscribeToTaskRequest(id=args.task)):
                d = MessageToDict(ev)
                states.append(d.get("statusUpdate", d.get("task", {})).get("status", {}).get("state"))
            return {"states": states}
        if args.scenario == "get":
            t = await client.get_task(GetTaskRequest(id=args.task))
            return {"task": MessageToDict(t)}
        if args.scenario == "cancel":
            t = await client.cancel_task(CancelTaskRequest(id=args.task))
            return {"task": MessageToDict(t)}
        if args.scenario == "list":
            r = await client.list_tasks(ListTasksRequest())
            return {"ids": [t.id for t in r.tasks]}
        if args.scenario == "push":
            r = await client.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=args.task, url=args.push_url, id="cb1")
            )
            return {"config": MessageToDict(r)}
        raise SystemExit(f"unknown scenario {args.scenario}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("scenario")
    ap.add_argument("--key")
    ap.add_argument("--task")
    ap.add_argument("--push-url")
    ap.add_argument("--text", default="hello")
    ap.add_argument("--binding", default="JSONRPC")
    ap.add_argument("--v03", action="store_true")
    ap.add_argument("--skill", help="the skill the message asks for (message metadata.skill)")
    args = ap.parse_args()
    try:
        out = asyncio.run(run(args))
    except Exception as e:  # the test asserts on what the SDK raised
        out = {"error": str(e), "type": type(e).__name__}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
