#!/usr/bin/env python3
"""A Kubernetes API server fixture for nodegate's tests (no real API server runs on this machine
kind). It serves what a real API server serves for the two resources nodegate watches, pods and
namespaces, in the same JSON:

- list: GET /api/v1/pods, /api/v1/namespaces (with fieldSelector spec.nodeName=..., limit and
  continue), answering PodList / NamespaceList with metadata.resourceVersion; items carry no
  kind/apiVersion, as in real lists.
- watch: ?watch=true&resourceVersion=N streams newline-delimited {"type","object"} events after N:
  ADDED, MODIFIED, DELETED, BOOKMARK (when allowWatchBookmarks=true, every --bookmark-interval),
  and, for a resourceVersion older than the compacted history, the ERROR event with a 410
  Expired Status that a real server sends.
- GET of one object of any resource it knows, PATCH of a status subresource (a JSON merge patch;
  `metadata.generation` counts spec changes only), and /version.

A control listener (plain JSON over HTTP) drives it: POST /<resource> (create or replace an object: pods, namespaces,
services, endpointslices, daemonsets, inferencepools), DELETE /<resource>/NS/NAME (/<resource>/NAME when cluster scoped), GET /<resource>/[NS/]NAME (the stored object, status included), POST /batch {"pods": [...], "rate": N} and /batch_delete {"keys": [[ns, name]], "rate": N} (apply or delete
at N per second, in the background; `batches_done` in /stats counts finished ones), POST /compact (drop history and end every watch, so
watchers must relist; with {"delete": [[ns, name]]} pods vanish without an event), POST /down
(close the API listener and every watch: connections are refused), POST /up, GET /stats.
"""
import argparse
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class State:
    def __init__(self):
        self.lock = threading.Condition()
        self.rv = 100
        self.compacted = 0  # watches from a resourceVersion below this get 410
        self.objects = {r: {} for r in KINDS}  # resource -> key -> object
        self.history = []  # (rv, resource, type, object, previous object)
        self.generation = 0  # bumped to end every open watch
        self.stats = {"lists": 0, "watches": 0, "expired": 0, "bookmarks": 0, "batches_done": 0}

    def bump(self):
        self.rv += 1
        return str(self.rv)

    def apply(self, resource, obj):
        with self.lock:
            meta = obj.setdefault("metadata", {})
            key = (meta.get("namespace", ""), meta["name"])
            old = self.objects[resource].get(key)
            meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            # generation counts spec changes, as for any resource with a status subresource
            if old is None:
                meta["generation"] = 1
            else:
                same = {k: v for k, v in obj.items() if k not in ("metadata", "status")} == \
                    {k: v for k, v in old.items() if k not in ("metadata", "status")}
                meta["generation"] = old["metadata"].get("generation", 1) + (0 if same else 1)
                if "status" not in obj and "status" in old:
                    obj["status"] = old["status"]
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta["resourceVersion"] = self.bump()
            self.objects[resource][key] = obj
            self.history.append((self.rv, resource, "MODIFIED" if old else "ADDED", obj, old))
            self.lock.notify_all()
            return obj

    def delete(self, resource, key, silent=False):
        with self.lock:
            obj = self.objects[resource].pop(key, None)
            if obj is None:
                return None
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = self.bump()
            if not silent:
                self.history.append((self.rv, resource, "DELETED", obj, None))
            self.lock.notify_all()
            return obj

    def patch_status(self, resource, key, patch):
        """A merge patch on the status subresource: only .status changes, generation stays."""
        with self.lock:
            obj = self.objects[resource].get(key)
            if obj is None:
                return None
            obj = json.loads(json.dumps(obj))
            obj["status"] = merge_patch(obj.get("status") or {}, (patch or {}).get("status") or {})
            obj["metadata"]["resourceVersion"] = self.bump()
            old = self.objects[resource][key]
            self.objects[resource][key] = obj
            self.history.append((self.rv, resource, "MODIFIED", obj, old))
            self.stats["status_patches"] = self.stats.get("status_patches", 0) + 1
            self.lock.notify_all()
            return obj

    def compact(self, silent_deletes):
        with self.lock:
            for ns, name in silent_deletes:
                self.delete("pods", (ns, name), silent=True)
            self.bump()
            self.compacted = self.rv
            self.history = []
            self.generation += 1
            self.lock.notify_all()


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# resource -> (kind, list kind, apiVersion)
KINDS = {
    "pods": ("Pod", "PodList", "v1"),
    "namespaces": ("Namespace", "NamespaceList", "v1"),
    "services": ("Service", "ServiceList", "v1"),
    "daemonsets": ("DaemonSet", "DaemonSetList", "apps/v1"),
    "endpointslices": ("EndpointSlice", "EndpointSliceList", "discovery.k8s.io/v1"),
    "inferencepools": ("InferencePool", "InferencePoolList", "inference.networking.k8s.io/v1"),
    "secrets": ("Secret", "SecretList", "v1"),
    # nodegate's own resources (cluster scoped)
    "llmproviders": ("LLMProvider", "LLMProviderList", "nodegate.io/v1alpha1"),
    "modelroutes": ("ModelRoute", "ModelRouteList", "nodegate.io/v1alpha1"),
    "modelaccesses": ("ModelAccess", "ModelAccessList", "nodegate.io/v1alpha1"),
    "llmbudgets": ("LLMBudget", "LLMBudgetList", "nodegate.io/v1alpha1"),
    "modelserverpools": ("ModelServerPool", "ModelServerPoolList", "nodegate.io/v1alpha1"),
    "mcpservers": ("MCPServer", "MCPServerList", "nodegate.io/v1alpha1"),
    "mcppolicies": ("MCPPolicy", "MCPPolicyList", "nodegate.io/v1alpha1"),
    "a2aagents": ("A2AAgent", "A2AAgentList", "nodegate.io/v1alpha1"),
    "a2aaccesses": ("A2AAccess", "A2AAccessList", "nodegate.io/v1alpha1"),
}


def route(parts):
    """(resource, namespace, name) of an API path, or None."""
    if parts[:2] == ["api", "v1"]:
        rest, version = parts[2:], "v1"
    elif len(parts) >= 3 and parts[0] == "apis":
        rest, version = parts[3:], f"{parts[1]}/{parts[2]}"
    else:
        return None
    ns = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    elif rest[:1] == ["namespaces"] and len(rest) == 2:
        return ("namespaces", None, rest[1])
    if not rest or rest[0] not in KINDS or KINDS[rest[0]][2] != version or len(rest) > 2:
        return None
    return (rest[0], ns, rest[1] if len(rest) == 2 else None)


def matches(resource, obj, field_selector, namespace=None, label_selector=None):
    if namespace and obj["metadata"].get("namespace") != namespace:
        return False
    for term in (label_selector or "").split(","):
        if term:
            k, _, v = term.partition("=")
            if (obj["metadata"].get("labels") or {}).get(k.rstrip("=")) != v.lstrip("="):
                return False
    if not field_selector:
        return True
    for term in field_selector.split(","):
        k, _, v = term.partition("=")
        if k == "spec.nodeName" and resource == "pods":
            if obj.get("spec", {}).get("nodeName") != v:
                return False
        elif k == "metadata.name":
            if obj["metadata"]["name"] != v:
                return False
    return True


def typed(resource, obj):
    kind, _, version = KINDS[resource]
    return dict(obj, kind=kind, apiVersion=version)


def make_api_handler(state, args, server_ref):
    class Api(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send_json(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def status(self, code, reason, message):
            self.send_json(code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                  "message": message, "reason": reason, "code": code})

        def do_GET(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            parts = [p for p in url.path.split("/") if p]
            if url.path == "/version":
                return self.send_json(200, {"major": "1", "minor": "34", "gitVersion": "v1.34.0-fixture"})
            r = route(parts)
            if r is None:
                return self.status(404, "NotFound", "the server could not find the requested resource")
            resource, ns, name = r
            if name is not None:
                obj = state.objects[resource].get((ns or "", name))
                if obj is None:
                    return self.status(404, "NotFound", f'{resource} "{name}" not found')
                return self.send_json(200, typed(resource, obj))
            q["namespace"] = ns
            if q.get("watch") in ("true", "1"):
                return self.watch(resource, q)
            return self.list(resource, q)

        def do_PATCH(self):
            url = urlparse(self.path)
            parts = [p for p in url.path.split("/") if p]
            if not parts or parts[-1] != "status":
                return self.status(405, "MethodNotAllowed", "only the status subresource is patched here")
            r = route(parts[:-1])
            if r is None or r[2] is None:
                return self.status(404, "NotFound", "the server could not find the requested resource")
            resource, ns, name = r
            n = int(self.headers.get("Content-Length") or 0)
            patch = json.loads(self.rfile.read(n) or b"{}")
            obj = state.patch_status(resource, (ns or "", name), patch)
            if obj is None:
                return self.status(404, "NotFound", f'{resource} "{name}" not found')
            self.send_json(200, typed(resource, obj))

        def list(self, resource, q):
            with state.lock:
                state.stats["lists"] += 1
                items = [o for o in state.objects[resource].values()
                         if matches(resource, o, q.get("fieldSelector"), q.get("namespace"), q.get("labelSelector"))]
                items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
                rv = str(state.rv)
            start = int(q.get("continue") or 0)
            limit = int(q.get("limit") or 0)
            page = items[start:start + limit] if limit else items[start:]
            meta = {"resourceVersion": rv}
            if limit and start + limit < len(items):
                meta["continue"] = str(start + limit)
                meta["remainingItemCount"] = len(items) - start - limit
            self.send_json(200, {"kind": KINDS[resource][1], "apiVersion": KINDS[resource][2], "metadata": meta, "items": page})

        def chunk(self, obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def watch(self, resource, q):
            since = int(q.get("resourceVersion") or 0)
            timeout = min(int(q.get("timeoutSeconds") or 1800), 1800)
            bookmarks = q.get("allowWatchBookmarks") == "true"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with state.lock:
                state.stats["watches"] += 1
                gen = state.generation
                expired = since and since < state.compacted
                if expired:
                    state.stats["expired"] += 1
            try:
                if expired:
                    self.chunk({"type": "ERROR", "object": {
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": f"too old resource version: {since} ({state.compacted})",
                        "reason": "Expired", "code": 410}})
                    self.wfile.write(b"0\r\n\r\n")
                    return
                deadline = time.monotonic() + timeout
                last_bookmark = time.monotonic()
                cursor = since
                while time.monotonic() < deadline and not server_ref["stopping"]:
                    with state.lock:
                        if state.generation != gen:
                            break
                        pending = [h for h in state.history if h[0] > cursor and h[1] == resource]
                        if not pending:
                            state.lock.wait(timeout=0.2)
                            pending = [h for h in state.history if h[0] > cursor and h[1] == resource]
                        current = state.rv
                    for rv, _, typ, obj, old in pending:
                        cursor = rv
                        sel = (q.get("fieldSelector"), q.get("namespace"), q.get("labelSelector"))
                        now_in, was_in = matches(resource, obj, *sel), old is not None and matches(resource, old, *sel)
                        # As a real server does: an object that leaves a selector is DELETED for
                        # that watch, one that enters it is ADDED.
                        if now_in:
                            typ = "ADDED" if typ == "MODIFIED" and not was_in else typ
                            self.chunk({"type": typ, "object": typed(resource, obj)})
                        elif was_in:
                            self.chunk({"type": "DELETED", "object": typed(resource, obj)})
                    if bookmarks and time.monotonic() - last_bookmark >= args.bookmark_interval:
                        last_bookmark = time.monotonic()
                        cursor = max(cursor, current)
                        with state.lock:
                            state.stats["bookmarks"] += 1
                        self.chunk({"type": "BOOKMARK", "object": {
                            "kind": KINDS[resource][0], "apiVersion": KINDS[resource][2],
                            "metadata": {"resourceVersion": str(cursor),
                                         "annotations": {"k8s.io/initial-events-end": "false"}}}})
                if not server_ref["stopping"]:
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            finally:
                self.close_connection = True

    return Api


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--control", default="127.0.0.1:0")
    ap.add_argument("--bookmark-interval", type=float, default=1.0)
    args = ap.parse_args()
    state = State()
    server_ref = {"server": None, "stopping": False}
    host, port = args.listen.rsplit(":", 1)

    def start_api(port):
        server_ref["stopping"] = False
        srv = ThreadingHTTPServer((host, port), make_api_handler(state, args, server_ref))
        srv.daemon_threads = True
        server_ref["server"] = srv
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return srv.server_address[1]

    api_port = start_api(int(port))

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(n) or b"{}")

        def reply(self, obj):
            data = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            parts = [p for p in self.path.split("/") if p]
            if parts and parts[0] in KINDS and len(parts) in (2, 3):
                key = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[1])
                with state.lock:
                    return self.reply(state.objects[parts[0]].get(key))
            with state.lock:
                self.reply(dict(state.stats, resourceVersion=state.rv, up=not server_ref["stopping"]))

        def do_POST(self):
            path = self.path.rstrip("/")
            if path.lstrip("/") in KINDS:
                return self.reply(state.apply(path.lstrip("/"), self.body()))
            if path in ("/batch", "/batch_delete"):
                body = self.body()
                items = body.get("pods") or body.get("keys") or []
                gap = 1.0 / float(body.get("rate") or 1000)

                def run():
                    start = time.monotonic()
                    for i, item in enumerate(items):
                        delay = start + i * gap - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        if path == "/batch":
                            state.apply("pods", item)
                        else:
                            state.delete("pods", tuple(item))
                    with state.lock:
                        state.stats["batches_done"] += 1

                threading.Thread(target=run, daemon=True).start()
                return self.reply({"started": len(items)})
            if path == "/compact":
                state.compact(self.body().get("delete", []))
                return self.reply({"compacted": state.compacted})
            if path == "/down":
                server_ref["stopping"] = True
                srv = server_ref["server"]
                srv.shutdown()
                srv.server_close()
                with state.lock:
                    state.generation += 1
                    state.lock.notify_all()
                return self.reply({"up": False})
            if path == "/up":
                start_api(api_port)
                return self.reply({"up": True})
            self.send_error(404)

        def do_DELETE(self):
            parts = [p for p in self.path.split("/") if p]
            if parts and parts[0] in KINDS and len(parts) in (2, 3):
                key = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[1])
                return self.reply({"deleted": state.delete(parts[0], key) is not None})
            self.send_error(404)

    chost, cport = args.control.rsplit(":", 1)
    control = ThreadingHTTPServer((chost, int(cport)), Control)
    control.daemon_threads = True
    print(json.dumps({"api": f"http://{host}:{api_port}", "control": f"http://{chost}:{control.server_address[1]}"}), flush=True)
    control.serve_forever()


if __name__ == "__main__":
    main()
