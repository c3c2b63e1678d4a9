"""Sends raw bytes the way a hostile or broken client would, and reports what came back.

Usage: raw_client.py HOST PORT MODE [WAIT_SECONDS]
MODE: half-method (b"POS", then silence), tls-hello (a TLS 1.2 ClientHello with SNI), or
json:BODY (one HTTP/1.1 POST to / with BODY as application/json).
Prints one JSON object: {"received": text, "closed": bool, "error": text|null}.
"""
import json
import socket
import struct
import sys


def client_hello(sni: bytes) -> bytes:
    name = struct.pack("!BH", 0, len(sni)) + sni
    server_name = struct.pack("!H", len(name)) + name
    ext = struct.pack("!HH", 0, len(server_name)) + server_name
    body = (
        b"\x03\x03" + b"\x11" * 32 + b"\x00"  # version, random, empty session id
        + struct.pack("!H", 2) + b"\x13\x01"  # one cipher suite
        + b"\x01\x00"  # null compression
        + struct.pack("!H", len(ext)) + ext
    )
    hs = b"\x01" + struct.pack("!I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def main():
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    wait = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    if mode == "half-method":
        data = b"POS"
    elif mode == "tls-hello":
        data = client_hello(b"api.provider.test")
    elif mode == "tls-garbage":
        # A TLS record header announcing a handshake, then bytes that are no ClientHello.
        data = b"\x16\x03\x01\x00\x20" + b"\x07" * 32
    elif mode.startswith("json:"):
        body = mode[5:].encode()
        data = (
            b"POST / HTTP/1.1\r\nhost: " + host.encode() + b"\r\ncontent-type: application/json\r\n"
            + b"accept: application/json, text/event-stream\r\n"
            + b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
    else:
        raise SystemExit(f"unknown mode {mode}")
    out = {"received": "", "closed": False, "error": None}
    try:
        s = socket.create_connection((host, port), timeout=wait)
        s.sendall(data)
        s.settimeout(wait)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                out["closed"] = True
                break
            got += chunk
        out["received"] = got.decode("latin-1")
    except socket.timeout:
        out["error"] = "timeout"
        out["received"] = locals().get("got", b"").decode("latin-1")
    except OSError as e:
        out["error"] = str(e)
        out["closed"] = True
    print(json.dumps(out))


main()
