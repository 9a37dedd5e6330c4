#!/usr/bin/env python3
"""Drives a running agentflow-sandbox server over HTTP as a Python agent would.

Covers the endpoints of seed 002 (/execute, /execute/batch, /session/*, /tools, /health, /warmup,
/warmup/status) and the /api/v1/... paths of the original Python client (docs/protocol.md §3).
Tool calls use only `bash:run` and `rag:search`. Standard library only.

    python3 tests/python/test_protocol.py [URL]      # URL default: $AGENTFLOW_URL or http://127.0.0.1:18890

Set AGENTFLOW_API_KEY if the server needs a key. Prints one line per check and closes with
`N passed, M failed`; exits 1 if any check failed. It does not stop the server (run.sh does).
"""

import json
import os
import re
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


class Server:
    """A thin HTTP helper: every answer as (status, parsed JSON)."""

    def __init__(self, base_url, api_key=None):
        self.base = base_url.rstrip("/")
        self.api_key = api_key

    def request(self, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", "Bearer " + self.api_key)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                return err.code, json.loads(payload)
            except ValueError:
                return err.code, {"_raw": payload.decode(errors="replace")}

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body if body is not None else {}, **kw)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def envelope_ok(status, v, what):
    check(status == 200, f"{what}: HTTP {status}: {v}")
    check(isinstance(v, dict) and v.get("code") == 0, f"{what}: code {v.get('code') if isinstance(v, dict) else v}: {v}")
    for key in ("code", "message", "data", "meta"):
        check(key in v, f"{what}: envelope has no '{key}'")
    for key in ("execution_time_ms", "tool", "resource_type", "session_id", "temporary_session", "trace_id"):
        check(key in v["meta"], f"{what}: meta has no '{key}'")
    return v["data"]


def envelope_err(status, v, http, code, what):
    check(status == http, f"{what}: expected HTTP {http}, got {status}: {v}")
    check(v.get("code") == code, f"{what}: expected code {code}, got {v.get('code')}: {v}")
    check(isinstance(v.get("message"), str) and v["message"], f"{what}: no message")
    return v


class Suite:
    def __init__(self, server):
        self.s = server
        self.worker = "py_" + uuid.uuid4().hex[:8]
        self.passed = 0
        self.failed = 0

    def run(self, name, fn):
        start = time.monotonic()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - a failed check of any kind is a failure
            self.failed += 1
            detail = str(exc) if isinstance(exc, AssertionError) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
        else:
            self.passed += 1
            print(f"PASS {name} ({(time.monotonic() - start) * 1000:.0f} ms)", flush=True)

    # ---- service ---------------------------------------------------------------------------

    def health(self):
        status, v = self.s.get("/health")
        check(status == 200 and v.get("status") == "ok", f"/health: {status} {v}")
        check(isinstance(v.get("version"), str) and v["version"], "/health has a version")
        check("code" not in v, "/health is not enveloped")

    def tools(self):
        data = envelope_ok(*self.s.get("/tools"), "/tools")
        tools = data["tools"]
        names = {t["name"] for t in tools}
        for wanted in ("bash:run", "rag:search"):
            check(wanted in names, f"/tools lists {wanted}: {sorted(names)}")
        for t in tools:
            check(":" in t["name"], f"full names: {t['name']}")
            for key in ("description", "resource_type", "parameters"):
                check(key in t, f"{t['name']} has {key}")
            p = t["parameters"]
            check(p.get("type") == "object" and isinstance(p.get("properties"), dict), f"{t['name']}: JSON Schema {p}")
        run = next(t for t in tools if t["name"] == "bash:run")
        check("command" in run["parameters"].get("required", []), "bash:run requires command")
        hidden = envelope_ok(*self.s.get("/tools?include_hidden=true"), "/tools?include_hidden=true")
        check(len(hidden["tools"]) >= len(tools), "include_hidden lists at least as many")

    def warmup(self):
        data = envelope_ok(*self.s.post("/warmup", {"backends": ["bash", "rag"]}), "/warmup")
        for name in ("bash", "rag"):
            check(data["backends"][name]["warmed_up"] is True, f"/warmup {name}: {data}")
        data = envelope_ok(*self.s.get("/warmup/status"), "/warmup/status")
        check(data["backends"]["bash"] == {"loaded": True, "warmed_up": True}, f"/warmup/status: {data}")
        status, v = self.s.post("/warmup", {"backends": ["no_such_backend"]})
        envelope_err(status, v, 404, 1005, "/warmup of an unknown backend")

    # ---- sessions and execution ------------------------------------------------------------

    def session_lifecycle(self):
        w = self.worker
        data = envelope_ok(
            *self.s.post("/session/create", {"worker_id": w, "resource_type": "bash", "custom_name": "py_bash"}),
            "/session/create",
        )
        sid = data["session_id"]
        check(sid.startswith(f"bash_{w}_"), f"session id shape: {sid}")
        check(data["session_name"] == "py_bash" and data["session_status"] == "active", f"create: {data}")
        check(data["resource_type"] == "bash", "create: resource_type")
        again = envelope_ok(*self.s.post("/session/create", {"worker_id": w, "resource_type": "bash"}), "create again")
        check(again["session_id"] == sid, "creating an existing session returns it")

        v = self.s.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": "echo hi"},
                                     "timeout": 30, "trace_id": "trace-py-1"})
        data = envelope_ok(*v, "/execute bash:run")
        check("hi" in data["stdout"] and data["exit_code"] == 0, f"bash:run echo hi: {data}")
        meta = v[1]["meta"]
        check(meta["session_id"] == sid and meta["temporary_session"] is False, f"ran in the session: {meta}")
        check(meta["tool"] == "run" and meta["resource_type"] == "bash", f"meta names the tool: {meta}")
        check(meta["trace_id"] == "trace-py-1", f"trace_id echoed: {meta}")
        for spelling in ("bash.run", "bash_run", "bash-run"):
            data = envelope_ok(*self.s.post("/execute", {"worker_id": w, "action": spelling,
                                                          "params": {"command": "echo hi"}}), spelling)
            check("hi" in data["stdout"], f"{spelling}: {data}")

        data = envelope_ok(*self.s.post("/session/list", {"worker_id": w}), "/session/list")
        sessions = data["sessions"]
        check(len(sessions) == 1, f"one session: {sessions}")
        s = sessions[0]
        check(s["resource_type"] == "bash" and s["session_id"] == sid and s["session_name"] == "py_bash", f"{s}")
        check(s["status"] == "active", f"status: {s}")
        for key in ("created_at", "last_activity", "expires_at"):
            check(RFC3339.match(s[key] or ""), f"{key} is RFC 3339 UTC: {s.get(key)}")

        data = envelope_ok(*self.s.post("/session/refresh", {"worker_id": w, "resource_type": "bash"}), "refresh")
        check(data["refreshed"][0]["session_id"] == sid and RFC3339.match(data["refreshed"][0]["expires_at"]),
              f"/session/refresh: {data}")

        data = envelope_ok(*self.s.post("/session/destroy", {"worker_id": w, "resource_type": "bash"}), "destroy")
        check(data["session_id"] == sid and data["resource_type"] == "bash", f"/session/destroy: {data}")
        status, v = self.s.post("/session/destroy", {"worker_id": w, "resource_type": "bash"})
        envelope_err(status, v, 404, 1003, "destroying a destroyed session")
        data = envelope_ok(*self.s.post("/session/list", {"worker_id": w}), "/session/list after destroy")
        check(data["sessions"] == [], f"no sessions left: {data}")

    def temporary_session(self):
        status, v = self.s.post("/execute", {"worker_id": self.worker, "action": "bash:run",
                                             "params": {"command": "echo temp"}})
        data = envelope_ok(status, v, "/execute without a session")
        check("temp" in data["stdout"], f"stdout: {data}")
        check(v["meta"]["temporary_session"] is True, f"temporary session: {v['meta']}")
        data = envelope_ok(*self.s.post("/session/list", {"worker_id": self.worker}), "list")
        check(data["sessions"] == [], "the temporary session is gone")

    def worker_header(self):
        h = {"X-Worker-ID": self.worker + "_h"}
        data = envelope_ok(*self.s.post("/session/create", {"resource_type": "bash"}, headers=h), "create by header")
        check(data["session_id"].startswith(f"bash_{self.worker}_h_"), f"worker from X-Worker-ID: {data}")
        envelope_ok(*self.s.post("/session/destroy", {"resource_type": "bash"}, headers=h), "destroy by header")

    def rag_search(self):
        status, v = self.s.post("/execute", {"worker_id": self.worker, "action": "rag:search",
                                             "params": {"query": "session"}})
        data = envelope_ok(status, v, "rag:search")
        check(isinstance(data["results"], list), f"data.results is a list: {data}")
        for hit in data["results"]:
            for key in ("id", "content", "score"):
                check(key in hit, f"hit has {key}: {hit}")
        check(v["meta"]["session_id"] is None, f"rag is shared: no session: {v['meta']}")

    def errors(self):
        w = self.worker
        status, v = self.s.post("/execute", {"worker_id": w, "action": "bash:run", "params": {}})
        envelope_err(status, v, 400, 1002, "missing command")
        check("command" in v["message"], f"the message names the field: {v['message']}")
        status, v = self.s.post("/execute", {"worker_id": w, "action": "bash:run", "params": {"command": 5}})
        envelope_err(status, v, 400, 1002, "mistyped command")
        status, v = self.s.post("/execute", {"worker_id": w, "action": "bash:no_such_tool"})
        envelope_err(status, v, 404, 1001, "unknown tool")
        status, v = self.s.request("POST", "/execute", raw=b"{not json")
        envelope_err(status, v, 400, 1002, "invalid JSON")
        status, v = self.s.post("/execute", {"worker_id": w})
        envelope_err(status, v, 400, 1002, "missing action")
        status, v = self.s.post("/session/create", {"worker_id": w, "resource_type": "no_such"})
        envelope_err(status, v, 404, 1005, "unknown resource type")
        status, v = self.s.get("/no/such/endpoint")
        envelope_err(status, v, 404, 1001, "unknown endpoint")

    def batch(self):
        w = self.worker
        actions = [{"action": "bash:run", "params": {"command": "echo one"}},
                   {"action": "rag:search", "params": {"query": "session"}}]
        for parallel in (False, True):
            data = envelope_ok(*self.s.post("/execute/batch", {"worker_id": w, "actions": actions,
                                                               "parallel": parallel}), f"batch parallel={parallel}")
            check(data["total"] == 2 and data["executed"] == 2 and data["success_count"] == 2, f"batch: {data}")
            check(len(data["results"]) == 2 and "one" in data["results"][0]["data"]["stdout"], f"in order: {data}")
            check(isinstance(data["results"][1]["data"]["results"], list), "second result is the search")
        failing = [{"action": "bash:run", "params": {"command": "echo ok"}}, {"action": "nope:tool"},
                   {"action": "bash:run", "params": {"command": "echo never"}}]
        status, v = self.s.post("/execute/batch", {"worker_id": w, "actions": failing, "stop_on_error": True})
        envelope_err(status, v, 207, 1001, "a partly failed batch")
        check(v["message"] == "1 of 3 actions failed", f"message: {v['message']}")
        check(v["data"]["executed"] == 2 and v["data"]["total"] == 3, f"stopped at the failure: {v['data']}")

    # ---- the original client's paths ------------------------------------------------------

    def compat_sessions_and_execute(self):
        w = self.worker + "_v1"
        data = envelope_ok(*self.s.post("/api/v1/session/create", {"worker_id": w, "resource_type": "bash",
                                                                    "session_config": {}}), "v1 create")
        sid = data["session_id"]
        data = envelope_ok(*self.s.post("/api/v1/execute", {"worker_id": w, "action": "bash:run",
                                                            "params": {"command": "echo v1"}}), "v1 execute")
        check("v1" in data["stdout"] and data["exit_code"] == 0, f"v1 execute: {data}")
        data = envelope_ok(*self.s.post("/api/v1/execute/batch", {"worker_id": w, "actions": [
            {"action": "bash:run", "params": {"command": "echo b"}}]}), "v1 batch")
        check(data["success_count"] == 1, f"v1 batch: {data}")
        data = envelope_ok(*self.s.post("/api/v1/session/list", {"worker_id": w}), "v1 list")
        check([s["session_id"] for s in data["sessions"]] == [sid], f"v1 list: {data}")
        envelope_ok(*self.s.post("/api/v1/session/refresh", {"worker_id": w}), "v1 refresh")
        h = {"X-Worker-ID": w}
        data = envelope_ok(*self.s.post("/api/v1/lifecycle/heartbeat", headers=h), "heartbeat")
        check(data["worker_id"] == w and data["active_sessions"] == ["bash"], f"heartbeat: {data}")
        check(RFC3339.match(data["timestamp"]), f"heartbeat timestamp: {data}")
        data = envelope_ok(*self.s.get("/api/v1/lifecycle/status?worker_id=" + w), "lifecycle status")
        check(data["active_resources"] == ["bash"] and data["sessions"]["bash"]["session_id"] == sid, f"{data}")
        check(isinstance(data["tools_available"], int) and data["tools_available"] > 0, f"tools_available: {data}")
        envelope_ok(*self.s.post("/api/v1/session/destroy", {"worker_id": w, "resource_type": "bash"}), "v1 destroy")
        envelope_ok(*self.s.post("/api/v1/session/create", {"worker_id": w, "resource_type": "bash"}), "v1 create 2")
        data = envelope_ok(*self.s.post("/api/v1/worker/disconnect", {"worker_id": w}), "disconnect")
        check(data == {"worker_id": w, "sessions_cleaned": 1}, f"disconnect: {data}")

    def compat_tools(self):
        for flag in ("False", "false", "0"):
            status, v = self.s.get("/api/v1/tools?include_hidden=" + flag)
            check(status == 200 and "code" not in v, f"v1 tools is not enveloped: {status} {v}")
            check(v["count"] == len(v["tools"]) > 0, f"count: {v.get('count')}")
        by_full = {t["full_name"]: t for t in v["tools"]}
        run = by_full.get("bash:run")
        check(run is not None and run["name"] == "run" and run["resource_type"] == "bash", f"bash:run: {run}")
        check(run["stateless"] is False and by_full["rag:search"]["stateless"] is True, "stateless flags")
        for t in v["tools"]:
            check("description" in t, f"{t} has a description")
        status, all_tools = self.s.get("/api/v1/tools?include_hidden=True")
        check(status == 200 and all_tools["count"] >= v["count"], "include_hidden=True")
        status, schema = self.s.get("/api/v1/tools/bash:run/schema")
        check(status == 200 and "command" in schema["parameters"]["properties"], f"schema: {status} {schema}")
        status, _ = self.s.get("/api/v1/tools/no_such_tool/schema")
        check(status == 404, f"unknown schema is 404: {status}")

    def compat_warmup_and_service(self):
        status, v = self.s.post("/api/v1/warmup", {"backends": ["bash"]})
        check(status == 200 and v["status"] == "success" and v["results"] == {"bash": True}, f"v1 warmup: {v}")
        check(v["summary"] == {"total": 1, "warmed_up": 1, "pending": 0}, f"v1 warmup summary: {v}")
        status, v = self.s.get("/api/v1/warmup/status")
        check(status == 200 and "bash" in v["backends"] and "code" not in v, f"v1 warmup status: {v}")
        s = v["summary"]
        check(s["total"] == len(v["backends"]) and s["warmed_up"] + s["pending"] == s["total"], f"summary: {s}")
        status, v = self.s.get("/ready")
        check(status == 200 and v["status"] == "ready" and v["tools_count"] > 0, f"/ready: {v}")
        for key in ("active_workers", "total_sessions"):
            check(isinstance(v.get(key), int), f"/ready has {key}: {v}")
        status, v = self.s.get("/api/v1/health")
        check(status == 200 and v["status"] == "ok", f"/api/v1/health: {v}")


def main():
    url = (sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("AGENTFLOW_URL") or "http://127.0.0.1:18890"
    suite = Suite(Server(url, os.environ.get("AGENTFLOW_API_KEY") or None))
    print(f"protocol test against {url} as worker {suite.worker}", flush=True)
    for name in ("health", "tools", "warmup", "session_lifecycle", "temporary_session", "worker_header",
                 "rag_search", "errors", "batch", "compat_sessions_and_execute", "compat_tools",
                 "compat_warmup_and_service"):
        suite.run(name, getattr(suite, name))
    print(f"{suite.passed} passed, {suite.failed} failed", flush=True)
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
