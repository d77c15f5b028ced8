#!/usr/bin/env python3
"""A slow client: opens N connections to HOST:PORT, sends an unfinished
request head on each (no blank line) and holds them open for SECONDS, then
closes them and exits. Prints "ready N" once every connection is open.

    slow_client.py HOST PORT N SECONDS
"""
import socket
import sys
import time


def main():
    host, port, n, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    conns = []
    try:
        for _ in range(n):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            conns.append(s)
        print("ready", len(conns), flush=True)
        time.sleep(seconds)
    finally:
        for s in conns:
            s.close()


if __name__ == "__main__":
    main()
