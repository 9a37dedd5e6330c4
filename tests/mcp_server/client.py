"""An MCP client that nobody here wrote (the official Python SDK, PyPI `mcp`) against the engine's
MCP server, over stdio or streamable HTTP. It lists the tools, builds shell state over two calls,
takes a screenshot and decodes the PNG, searches rag, makes a call with a missing parameter, and
prints one JSON line: what it saw, and the pids of the shell and of the server's children, for the
Rust test to check that nothing outlives the connection.

    python client.py stdio BIN CONFIG
    python client.py http URL [API_KEY]
"""

import asyncio
import base64
import json
import struct
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def text_of(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def exercise(session):
    await session.initialize()
    tools = (await session.list_tools()).tools
    names = sorted(t.name for t in tools)
    schemas = {t.name: t.input_schema for t in tools}
    seen = {"tools": names, "bash_run_required": schemas.get("bash_run", {}).get("required")}

    first = await session.call_tool("bash_run", {"command": "cd /tmp && export X=1"})
    second = await session.call_tool("bash_run", {"command": "echo $X; pwd"})
    seen["state"] = text_of(second)
    seen["state_structured"] = second.structured_content
    seen["first_error"] = first.is_error

    shot = await session.call_tool("vm_screenshot", {})
    images = [c for c in shot.content if getattr(c, "type", "") == "image"]
    png = base64.b64decode(images[0].data) if images else b""
    if png[:8] == b"\x89PNG\r\n\x1a\n":
        width, height = struct.unpack(">II", png[16:24])
        seen["screenshot"] = [width, height, images[0].mime_type]
    else:
        seen["screenshot"] = None

    hits = await session.call_tool("rag_search", {"query": "session", "top_k": 2})
    seen["rag_error"] = hits.is_error
    seen["rag_hits"] = len((hits.structured_content or {}).get("results", []))

    bad = await session.call_tool("bash_run", {})
    seen["bad"] = {"isError": bad.is_error, "text": text_of(bad)}

    pids = await session.call_tool("bash_run", {"command": "echo $$; ps -o pid= --ppid $PPID | tr -s ' \\n' ' '"})
    lines = text_of(pids).split("\n")
    seen["bash_pid"] = int(lines[0])
    seen["server_children"] = [int(p) for p in lines[1].split()]
    return seen


async def main():
    mode = sys.argv[1]
    if mode == "stdio":
        params = StdioServerParameters(command=sys.argv[2], args=["mcp", "--config", sys.argv[3]])
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                seen = await exercise(session)
    else:
        import httpx2

        headers = {"Authorization": f"Bearer {sys.argv[3]}"} if len(sys.argv) > 3 else {}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with streamable_http_client(sys.argv[2], http_client=http) as streams:
                read, write = streams[0], streams[1]
                async with ClientSession(read, write) as session:
                    seen = await exercise(session)
    print(json.dumps(seen), flush=True)


asyncio.run(main())
