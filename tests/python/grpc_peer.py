"""A real gRPC server and client (grpcio, no generated code: raw-bytes methods) for the gRPC
suite. `server ADDR`: serves demo.Echo/Say (echo, with a trailer), demo.Echo/Fail
(PERMISSION_DENIED) and demo.Echo/Stream (three messages). `client TARGET`: calls each and
prints what came back as JSON. `one TARGET METHOD`: one unary call to demo.Echo/METHOD, its
answer or its status code and details as JSON."""
import json
import sys
from concurrent import futures

import grpc


def serve(addr):
    def say(req, ctx):
        ctx.set_trailing_metadata((("x-echo-trailer", "kept"),))
        return b"echo: " + req

    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")

    def stream(req, ctx):
        for i in range(3):
            yield b"%d:" % i + req

    handler = grpc.method_handlers_generic_handler("demo.Echo", {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(addr)
    server.start()
    print("listening", addr, flush=True)
    server.wait_for_termination()


def client(target):
    out = {}
    with grpc.insecure_channel(target) as ch:
        resp, call = ch.unary_unary("/demo.Echo/Say").with_call(b"hi", timeout=10)
        out["say"] = resp.decode()
        out["trailers"] = dict(call.trailing_metadata() or ())
        try:
            ch.unary_unary("/demo.Echo/Fail")(b"x", timeout=10)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            out["fail"] = {"code": e.code().name, "details": e.details()}
        out["stream"] = [m.decode() for m in ch.unary_stream("/demo.Echo/Stream")(b"s", timeout=10)]
    print(json.dumps(out), flush=True)


def one(target, method):
    with grpc.insecure_channel(target) as ch:
        try:
            resp = ch.unary_unary(f"/demo.Echo/{method}")(b"hi", timeout=10)
            out = {"ok": resp.decode()}
        except grpc.RpcError as e:
            out = {"code": e.code().name, "details": e.details()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "one":
        one(sys.argv[2], sys.argv[3])
    else:
        {"server": serve, "client": client}[sys.argv[1]](sys.argv[2])
