#!/usr/bin/env python3
"""A small authoritative DNS server for nodegate's tests (a stand-in for a cluster's DNS
Service): answers A queries over UDP for the names given, NXDOMAIN for every other name, an empty
answer for other types of a known name. Prints one JSON line {"listen": ...} when ready; every
query it answered is appended to --log as a JSON line {"name", "type"}.

dns_server.py --listen 127.0.0.1:15353 --record upstream.agents.svc.cluster.local=127.0.0.1 [--ttl 5]
"""
import argparse
import json
import socket
import struct


def parse_name(data, i):
    labels = []
    while True:
        n = data[i]
        if n == 0:
            return ".".join(labels).lower(), i + 1
        if n & 0xC0:
            raise ValueError("compressed names are not expected in a question")
        labels.append(data[i + 1:i + 1 + n].decode("ascii", "replace"))
        i += 1 + n


def answer(data, records, ttl):
    ident, flags, qd = struct.unpack(">HHH", data[:6])
    if qd != 1:
        return None, None
    name, i = parse_name(data, 12)
    qtype, qclass = struct.unpack(">HH", data[i:i + 4])
    question = data[12:i + 4]
    rd = flags & 0x0100
    known = name in records
    rcode = 0 if known else 3
    answers = b""
    count = 0
    if known and qtype == 1 and qclass == 1:
        answers = struct.pack(">HHHIH", 0xC00C, 1, 1, ttl, 4) + socket.inet_aton(records[name])
        count = 1
    header = struct.pack(">HHHHHH", ident, 0x8400 | rd | 0x0080 | rcode, 1, count, 0, 0)
    return header + question + answers, (name, qtype)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--record", action="append", default=[])
    ap.add_argument("--ttl", type=int, default=5)
    ap.add_argument("--log", default=None)
    args = ap.parse_args()
    records = {}
    for r in args.record:
        name, _, ip = r.partition("=")
        records[name.rstrip(".").lower()] = ip
    host, port = args.listen.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    print(json.dumps({"listen": args.listen}), flush=True)
    while True:
        data, peer = sock.recvfrom(4096)
        try:
            reply, asked = answer(data, records, args.ttl)
        except (ValueError, IndexError, struct.error):
            continue
        if reply is None:
            continue
        sock.sendto(reply, peer)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps({"name": asked[0], "type": asked[1]}) + "\n")


if __name__ == "__main__":
    main()
