#!/usr/bin/env bash
# Installs the MCP servers the mcp tests run, at pinned versions, into one directory (default
# target/mcp-servers; the tests read AGENTFLOW_MCP_SERVERS if set): from npm the reference
# servers filesystem, memory and everything (Node.js), and from PyPI mcp-server-time in a venv.
# And the MCP clients the mcp_server tests drive the engine with: the MCP Inspector (npm, its
# command-line mode) and the official Python SDK (`mcp`, in the same venv).
# Skips what is already there. .ci/test calls it.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${AGENTFLOW_MCP_SERVERS:-target/mcp-servers}
mkdir -p "$dir"
if [ ! -x "$dir/node_modules/.bin/mcp-server-everything" ]; then
  echo "installing the npm MCP servers into $dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    @modelcontextprotocol/server-filesystem@2026.8.31 \
    @modelcontextprotocol/server-memory@2026.8.31 \
    @modelcontextprotocol/server-everything@2026.8.31 >/dev/null
fi
if [ ! -x "$dir/node_modules/.bin/mcp-inspector" ]; then
  echo "installing the MCP Inspector into $dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error @modelcontextprotocol/inspector@2.12.0 >/dev/null
fi
if [ ! -x "$dir/venv/bin/mcp-server-time" ]; then
  echo "installing mcp-server-time into $dir/venv"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check mcp-server-time==2026.10.19
fi
if ! "$dir/venv/bin/python" -c 'import importlib.metadata as m; assert m.version("mcp") == "2.3.0"' 2>/dev/null; then
  echo "installing the Python MCP SDK into $dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check mcp==2.3.0
fi
