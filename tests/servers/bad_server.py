"""A deliberately broken MCP server over stdio: valid handshake, then misbehaviour per tool.

tools/call name decides what goes wrong:
  garbage    -> a line that is not JSON, then nothing (the call must time out, not crash the client)
  notobject  -> result is a string, not an object
  noresult   -> response with neither result nor error
  wrongid    -> response for an id nobody asked, then the right one
  error      -> a JSON-RPC error object with code -32602
  ok         -> a normal result
"""

import json
import sys


def send(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in
         ("garbage", "notobject", "noresult", "wrongid", "error", "ok")]

for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if "id" not in msg:
        continue
    rid, method = msg["id"], msg.get("method")
    if method == "server/discover":
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})
    elif method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                                                        "serverInfo": {"name": "bad", "version": "0"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        name = msg["params"]["name"]
        if name == "garbage":
            sys.stdout.write("this is not json\n")
            sys.stdout.flush()
        elif name == "notobject":
            send({"jsonrpc": "2.0", "id": rid, "result": "nope"})
        elif name == "noresult":
            send({"jsonrpc": "2.0", "id": rid})
        elif name == "wrongid":
            send({"jsonrpc": "2.0", "id": 99999, "result": {"content": []}})
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "right"}]}})
        elif name == "error":
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "bad params from server"}})
        else:
            send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "fine"}]}})
