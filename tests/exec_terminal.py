#!/usr/bin/python3
"""The terminal client of tests/exec_spec.lua (python3-websocket).

  exec_terminal.py URL TOKEN MODE
    MODE "echo": sends `echo hi` and `exit 5` to sh, prints JSON
      {"out": what came back, "last": the last text message, "close": the
      close code}
    MODE "status": prints the HTTP status of a refused upgrade (or "open")
    TOKEN "proto:<token>": the token in the offered protocols, as a browser's
      WebSocket sends it, instead of Authorization
    MODE "drop": opens, reads the prompt, then closes the TCP socket without
      a close frame; prints "dropped"
    MODE "sizes" MESSAGE...: sends each MESSAGE to sh in turn (a text
      message; "bin:..." a binary one), "stty" as `stty size` then waits for
      its answer; then `exit`. Prints JSON {"sizes": the answers ("33 101",
      or busybox's "stty: standard input" for a TTY of no size),
      "last": the last text message}
    MODE "input" MESSAGE...: sends each MESSAGE (as above), then ^D ^D; reads to
      the end; prints JSON {"out", "last"}
"""
import base64
import json
import re
import sys
import time

import websocket

url, token, mode = sys.argv[1], sys.argv[2], sys.argv[3]
headers = ["Authorization: Bearer " + token] if token else []
protocols = None
if token.startswith("proto:"):  # as a browser sends it (README "Security")
    b64 = base64.urlsafe_b64encode(token[6:].encode()).decode().rstrip("=")
    headers, protocols = [], ["horcrux", "horcrux.bearer." + b64]

if mode == "status":
    try:
        websocket.create_connection(url, timeout=10, header=headers,
                                subprotocols=protocols)
        print("open")
    except websocket.WebSocketBadStatusException as e:
        print(e.status_code)
    sys.exit(0)

ws = websocket.create_connection(url, timeout=10, header=headers,
                                subprotocols=protocols)
if mode == "drop":
    ws.send("echo ready\n")
    out = b""
    deadline = time.time() + 10
    while b"ready" not in out.replace(b"echo ready", b"") and time.time() < deadline:
        op, data = ws.recv_data()
        out += data
    ws.sock.close()  # no close frame: the client is simply gone
    print("dropped")
    sys.exit(0)



def send(message):
    if message.startswith("bin:"):
        ws.send_binary(message[4:].encode())
    else:
        ws.send(message)


def read_to_end(deadline):
    """The output and the last text message, up to the close."""
    out, last = b"", None
    while time.time() < deadline:
        try:
            op, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if op == websocket.ABNF.OPCODE_TEXT:
            last = json.loads(data)
        elif op == websocket.ABNF.OPCODE_BINARY:
            out += data
    return out, last


if mode == "sizes":
    sizes, deadline = [], time.time() + 20
    for message in sys.argv[4:]:
        if message != "stty":
            send(message)
            continue
        ws.send("stty size\n")
        got = b""
        while time.time() < deadline:
            op, data = ws.recv_data()
            got += data
            m = re.search(rb"(?:^|\n)(\d+ \d+|stty: [^\r]*)\r\n", got)
            if m:
                sizes.append(m.group(1).decode())
                break
    ws.send("exit\n")
    out, last = read_to_end(deadline)
    print(json.dumps({"sizes": sizes, "last": last}))
    sys.exit(0)

if mode == "input":
    for message in sys.argv[4:]:
        send(message)
    ws.send("\x04\x04")  # the first ends a line left open, if any
    out, last = read_to_end(time.time() + 20)
    print(json.dumps({"out": out.decode("utf-8", "replace"), "last": last}))
    sys.exit(0)

ws.send("echo hi\n")
out, last, code = b"", None, None
sent_exit = False
deadline = time.time() + 15
while time.time() < deadline:
    try:
        op, data = ws.recv_data(control_frame=True)
    except websocket.WebSocketConnectionClosedException:
        break
    if op == websocket.ABNF.OPCODE_CLOSE:
        code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
        break
    if op == websocket.ABNF.OPCODE_TEXT:
        last = json.loads(data)
        continue
    if op == websocket.ABNF.OPCODE_BINARY:
        out += data
        if b"hi\r\n" in out.replace(b"echo hi\r\n", b"") and not sent_exit:
            ws.send_binary(b"exit 5\n")
            sent_exit = True
print(json.dumps({"out": out.decode("utf-8", "replace"), "last": last,
                  "close": code}))
