#!/usr/bin/env python3
"""Check `directory-sync serve` with the official MCP Python SDK, on stdio and streamable HTTP.

Usage:
    pip install mcp jsonschema
    python3 scripts/mcp_clients.py path/to/directory-sync [--keep]

The script makes its own temporary folder (kept with --keep), with one data
folder (`serve --path`) and one files root (`serve --files-root`) per
transport, and starts the server itself:

  * stdio: `BINARY serve --path DATA --files-root FILES`, through the SDK's
    `stdio_client`;
  * HTTP:  `BINARY serve --http 127.0.0.1:0 --path DATA --files-root FILES`;
    the URL is read from the server's stderr ("serving MCP on http://.../mcp")
    and reached with the SDK's streamable HTTP client.

DATABASE_URL is removed from the server's environment, so it uses SQLite in
DATA/.directory-sync/store.db.

On each transport it checks:

  1. initialize answers, and tools/list names exactly the eight batch tools
     and the seven folder and job tools;
  2. each tool's inputSchema is a valid JSON Schema 2020-12 document
     (Draft202012Validator.check_schema) and follows the strict dialect many
     assistants need: no `format` on integers/numbers (uint64, int64, ...),
     no `type` lists such as ["string", "null"], no anyOf/oneOf branch that is
     only null (and no OpenAPI `nullable`); defaults of null on non-null types
     are printed as a NOTE, not a failure;
  3. the annotations the README promises (batch_search read-only,
     batch_extract open-world);
  4. every tool called once with small valid arguments (checked against its
     own inputSchema first) answers with isError not true, with the figures
     of its structured result;
  5. refused calls (batch_delete with dry_run false and no confirm_count,
     max_documents 0) answer isError true with a readable text, and an
     unknown tool is a JSON-RPC error;
  6. progress: a batch_search of 400 queries (over 12,000 seeded documents)
     with a progress callback gets progress notifications, whose values
     never decrease (in wire order) and never pass the total;
  7. the largest batch_add the schema allows (10,000 documents) answers with
     a result the client can read;
  8. cancellation from the client side (an anyio cancel scope around
     `call_tool`, which makes the SDK send notifications/cancelled):
       - an atomic batch_add of 10,000 documents split into 90,000 parts:
         the SDK sent notifications/cancelled, the session still answers,
         no progress arrives after a short grace, and nothing was written
         (a batch_delete dry run counts the collection for a few seconds);
       - a batch_search of 1,000 text queries with max_parallel 1: the session
         still answers and the server stops sending progress for it.

Every check prints one PASS or FAIL line with figures; the exit code is 1 if
any check failed. NOTE lines (defaults of null, warnings the SDK logged) are
information only. Messages on the wire are observed by wrapping the two
streams the transport hands to ClientSession (nothing is patched in the SDK).

Written against mcp 2.x (snake_case fields, `streamable_http_client`); the
1.x names (`isError`, `inputSchema`, `streamablehttp_client`) are used when
the 2.x ones are missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

import anyio
import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

try:  # mcp 2.x
    from mcp.client.streamable_http import streamable_http_client as http_transport
except ImportError:  # mcp 1.x
    from mcp.client.streamable_http import streamablehttp_client as http_transport

EXPECTED_TOOLS = [
    "batch_search",
    "batch_add",
    "batch_update",
    "batch_delete",
    "batch_enhance",
    "batch_extract",
    "batch_export",
    "batch_import",
    # The folder and job tools (issue 21).
    "sync_folder",
    "import_files",
    "export_entities",
    "job_status",
    "list_jobs",
    "folder_status",
    "cancel_job",
    "retry_job",
]
READ_ONLY_TOOLS = {"batch_search", "job_status", "list_jobs", "folder_status"}

# Seconds one ordinary call may take before the check gives up on it.
CALL_TIMEOUT = 120
# After a cancel, progress for the cancelled request is tolerated this long.
CANCEL_GRACE = 1.0
# After a cancel, how long the collection of the atomic batch_add is watched.
CANCEL_WATCH = 6.0


# --------------------------------------------------------------------------
# Reporting


class Report:
    """Collects PASS/FAIL lines; each is printed as soon as it is known."""

    def __init__(self) -> None:
        self.failures = 0
        self.passes = 0

    def check(self, transport: str, name: str, ok: bool, detail: str = "") -> bool:
        word = "PASS" if ok else "FAIL"
        if ok:
            self.passes += 1
        else:
            self.failures += 1
        print(f"{word} [{transport}] {name}: {detail}", flush=True)
        return ok

    def note(self, transport: str, name: str, detail: str) -> None:
        print(f"NOTE [{transport}] {name}: {detail}", flush=True)


class SdkWarnings(logging.Handler):
    """Keeps the warnings the SDK logs (e.g. about session termination) for NOTE lines."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")

    def drain(self) -> list[str]:
        out, self.messages = self.messages, []
        return out


def field(obj: Any, *names: str, default: Any = None) -> Any:
    """The first attribute of `obj` among `names` (2.x snake_case, then 1.x camelCase)."""
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def is_error(result: Any) -> bool:
    return bool(field(result, "is_error", "isError", default=False))


def result_text(result: Any) -> str:
    parts = [getattr(c, "text", "") for c in field(result, "content", default=[]) or []]
    return "\n".join(p for p in parts if p)


def structured(result: Any) -> dict:
    """The structured result, or the text content read as JSON, or {}."""
    data = field(result, "structured_content", "structuredContent")
    if isinstance(data, dict):
        return data
    try:
        data = json.loads(result_text(result))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """One line for an exception, unwrapping (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {short(str(exc), 300)}"


# --------------------------------------------------------------------------
# Watching the wire: wrappers around the streams given to ClientSession


class Wire:
    """JSON-RPC messages seen between ClientSession and the transport, with times."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, dict]] = []
        self.received: list[tuple[float, dict]] = []

    @staticmethod
    def as_dict(item: Any) -> dict | None:
        message = getattr(item, "message", None)
        if message is None:
            return None
        message = getattr(message, "root", message)  # 1.x wraps it in a RootModel
        try:
            return message.model_dump(by_alias=True, exclude_none=True)
        except AttributeError:
            return None

    def cancelled_sent(self, request_id: Any) -> list[float]:
        return [
            t
            for t, m in self.sent
            if m.get("method") == "notifications/cancelled"
            and (m.get("params") or {}).get("requestId") == request_id
        ]

    def progress_received(self, token: Any) -> list[tuple[float, float, float | None]]:
        out = []
        for t, m in self.received:
            if m.get("method") != "notifications/progress":
                continue
            params = m.get("params") or {}
            if params.get("progressToken") == token:
                out.append((t, params.get("progress"), params.get("total")))
        return out

    def response_received(self, request_id: Any) -> list[float]:
        return [t for t, m in self.received if "method" not in m and m.get("id") == request_id]

    def last_tool_call(self, tool: str) -> dict | None:
        for _, m in reversed(self.sent):
            if m.get("method") == "tools/call" and (m.get("params") or {}).get("name") == tool:
                return m
        return None


class SendTap:
    """Write stream wrapper: records each outgoing message, then forwards it."""

    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    async def send(self, item: Any) -> None:
        data = Wire.as_dict(item)
        if data is not None:
            self._wire.sent.append((time.monotonic(), data))
        await self._inner.send(item)

    async def __aenter__(self) -> "SendTap":
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class ReceiveTap:
    """Read stream wrapper: records each incoming message as it is handed on."""

    def __init__(self, inner: Any, wire: Wire) -> None:
        self._inner = inner
        self._wire = wire

    def _record(self, item: Any) -> Any:
        data = Wire.as_dict(item)
        if data is not None:
            self._wire.received.append((time.monotonic(), data))
        return item

    async def receive(self) -> Any:
        return self._record(await self._inner.receive())

    def __aiter__(self) -> "ReceiveTap":
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> "ReceiveTap":
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# --------------------------------------------------------------------------
# Schema rules

# Keywords whose value is a map of name -> subschema, a list of subschemas,
# or one subschema (JSON Schema 2020-12 plus the older `definitions`).
SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
SCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
SCHEMA_SINGLE = {
    "items", "additionalProperties", "not", "if", "then", "else", "contains",
    "propertyNames", "unevaluatedItems", "unevaluatedProperties", "additionalItems",
}


def is_null_only(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    return (
        schema.get("type") == "null"
        or ("const" in schema and schema["const"] is None)
        or schema.get("enum") == [None]
    )


def walk_schema(schema: Any, path: str, visit: Callable[[dict, str], None]) -> None:
    """Call visit(subschema, path) on the schema and every subschema in it."""
    if not isinstance(schema, dict):
        return
    visit(schema, path)
    for key, value in schema.items():
        if key in SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                walk_schema(sub, f"{path}/{key}/{name}", visit)
        elif key in SCHEMA_LISTS and isinstance(value, list):
            for i, sub in enumerate(value):
                walk_schema(sub, f"{path}/{key}/{i}", visit)
        elif key in SCHEMA_SINGLE and isinstance(value, dict):
            walk_schema(value, f"{path}/{key}", visit)


def strict_problems(schema: dict) -> tuple[list[str], list[str]]:
    """(problems, notes): strict-dialect violations and softer remarks."""
    problems: list[str] = []
    notes: list[str] = []

    def visit(node: dict, path: str) -> None:
        kind = node.get("type")
        if isinstance(kind, list):
            problems.append(f"{path}: type is a list {kind}")
        if "format" in node and (kind in ("integer", "number") or re.match(r"^u?int\d+$|^float|^double", str(node["format"]))):
            problems.append(f"{path}: format {node['format']!r} on type {kind!r}")
        for key in ("anyOf", "oneOf"):
            for i, branch in enumerate(node.get(key) or []):
                if is_null_only(branch):
                    problems.append(f"{path}/{key}/{i}: a null branch")
        if node.get("nullable") is True:
            problems.append(f"{path}: nullable (OpenAPI, not JSON Schema)")
        if "default" in node and node["default"] is None and kind not in (None, "null"):
            notes.append(f"{path}: default null on type {kind!r}")

    walk_schema(schema, "#", visit)
    return problems, notes


def argument_errors(schema: dict, arguments: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(arguments)]


# --------------------------------------------------------------------------
# Test files


def make_workspace(root: Path, transport: str) -> tuple[Path, Path]:
    """DATA (for --path) and FILES (for --files-root) with a few notes and an import file."""
    data = root / transport / "data"
    files = root / transport / "files"
    (files / "notes").mkdir(parents=True)
    (files / "out").mkdir()
    (files / "in").mkdir()
    data.mkdir(parents=True)
    (files / "notes" / "alpha.md").write_text(
        "---\ntitle: Alpha\nstatus: draft\n---\n# Alpha\n\nA note about apples and orchards.\n"
    )
    (files / "notes" / "beta.txt").write_text("Bananas ripen faster next to apples.\n")
    (files / "notes" / "gamma.html").write_text(
        "<html><body><h1>Gamma</h1><p>Cherries are stone fruit.</p></body></html>\n"
    )
    rows = [
        {"id": "imp-1", "content": "Imported row one about plums", "metadata": {"source": "jsonl"}},
        {"id": "imp-2", "content": "Imported row two about figs", "metadata": {"source": "jsonl"}},
    ]
    (files / "in" / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, files


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DIRECTORY_SYNC_TOKEN")}
    return env


# --------------------------------------------------------------------------
# The checks, run on one open session


def expect(condition: bool, figures: str) -> tuple[bool, str]:
    return condition, figures


# Each valid call: tool, arguments, and a judge of the structured result.
VALID_CALLS: list[tuple[str, dict, Callable[[dict], tuple[bool, str]]]] = [
    (
        "batch_add",
        {
            "collection": "note",
            "documents": [
                {"id": "n1", "content": "Apples grow in orchards", "metadata": {"status": "draft"}},
                {"id": "n2", "content": "# Pears\n\nPears are sweet", "metadata": {"status": "draft"}},
                {"id": "n3", "content": "Plums and apricots"},
            ],
        },
        lambda r: expect(len(r.get("added", [])) == 3 and not r.get("errors"),
                         f"added={len(r.get('added', []))} errors={len(r.get('errors', []))}"),
    ),
    (
        "batch_search",
        {"queries": [{"query": "apples", "search_type": "text", "limit": 5},
                     {"query": "pears", "search_type": "hybrid", "limit": 3}]},
        lambda r: expect(
            len(r.get("results", [])) == 2 and any(h.get("id") == "n1" for h in r["results"][0].get("hits", [])),
            f"results={len(r.get('results', []))} hits={[len(x.get('hits', [])) for x in r.get('results', [])]}",
        ),
    ),
    (
        "batch_update",
        {"collection": "note", "document_ids": ["n1", "n2"], "metadata_updates": {"status": "reviewed"}},
        lambda r: expect(r.get("matched") == 2 and not r.get("errors"),
                         f"matched={r.get('matched')} updated={len(r.get('updated', []))}"),
    ),
    (
        "batch_enhance",
        {"filter": 'entity_type = "note"', "fields": ["title", "tags"]},
        lambda r: expect(r.get("matched") == 3 and not r.get("errors"),
                         f"matched={r.get('matched')} updated={len(r.get('updated', []))} enhancer={r.get('enhancer')}"),
    ),
    (
        "batch_extract",
        {"files": ["notes"], "collection": "extracted", "shared_metadata": {"origin": "mcp-clients"}},
        lambda r: expect(len(r.get("added", [])) == 3 and not r.get("errors"),
                         f"processed={r.get('processed')} added={len(r.get('added', []))}"),
    ),
    (
        "batch_export",
        {"path": "out/export.jsonl", "filter": 'entity_type = "note"'},
        lambda r: expect(r.get("exported") == 3, f"exported={r.get('exported')} files={r.get('files')}"),
    ),
    (
        "batch_import",
        {"path": "in/rows.jsonl", "collection": "imported"},
        lambda r: expect(r.get("processed") == 2 and not r.get("errors") and not r.get("aborted"),
                         f"processed={r.get('processed')} errors={r.get('error_count')} files={r.get('files')}"),
    ),
    (
        "batch_delete",
        {"filter": 'entity_type = "imported"'},
        lambda r: expect(r.get("dry_run") is True and r.get("matched") == 2 and r.get("deleted") == 0,
                         f"dry_run={r.get('dry_run')} matched={r.get('matched')} deleted={r.get('deleted')}"),
    ),
]

BAD_CALLS: list[tuple[str, str, dict, str]] = [
    ("delete without confirm_count", "batch_delete",
     {"filter": 'entity_type = "note"', "dry_run": False}, "confirm_count"),
    ("max_documents 0", "batch_update",
     {"filter": 'entity_type = "note"', "metadata_updates": {"x": 1}, "max_documents": 0}, "max_documents"),
]


class Suite:
    def __init__(self, transport: str, session: ClientSession, wire: Wire, report: Report, files: Path,
                 data: Path) -> None:
        self.t = transport
        self.s = session
        self.wire = wire
        self.report = report
        self.files = files
        self.data = data
        self.schemas: dict[str, dict] = {}

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        return self.report.check(self.t, name, ok, detail)

    async def call(self, tool: str, arguments: dict, **kwargs: Any) -> Any:
        with anyio.fail_after(CALL_TIMEOUT):
            return await self.s.call_tool(tool, arguments, **kwargs)

    async def run(self) -> None:
        steps = [
            self.initialize, self.list_tools, self.schema_checks, self.annotations,
            self.valid_calls, self.job_calls, self.background_calls, self.bad_calls, self.unknown_tool, self.progress, self.large_result,
            self.cancel_atomic_add, self.cancel_search,
        ]
        for step in steps:
            try:
                await step()
            except Exception as exc:  # one broken step should not hide the others
                self.check(step.__name__, False, f"raised {describe_exception(exc)}")

    async def initialize(self) -> None:
        with anyio.fail_after(30):
            result = await self.s.initialize()
        info = field(result, "server_info", "serverInfo")
        version = field(result, "protocol_version", "protocolVersion")
        caps = field(result, "capabilities")
        has_tools = field(caps, "tools") is not None
        self.check("initialize", has_tools,
                   f"server={field(info, 'name')} {field(info, 'version')} protocol={version} tools capability={has_tools}")

    async def list_tools(self) -> None:
        t0 = time.monotonic()
        with anyio.fail_after(30):
            result = await self.s.list_tools()
        ms = (time.monotonic() - t0) * 1000
        names = [tool.name for tool in result.tools]
        for tool in result.tools:
            self.schemas[tool.name] = field(tool, "input_schema", "inputSchema") or {}
        self.check("tools/list", sorted(names) == sorted(EXPECTED_TOOLS),
                   f"{len(names)} tools in {ms:.0f} ms: {', '.join(names)}")
        self._tools = result.tools

    async def schema_checks(self) -> None:
        for name in EXPECTED_TOOLS:
            schema = self.schemas.get(name)
            if schema is None:
                self.check(f"schema {name}", False, "tool not listed")
                continue
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
                valid = "valid 2020-12"
            except jsonschema.SchemaError as exc:
                self.check(f"schema {name}", False, f"not a valid 2020-12 schema: {short(exc.message)}")
                continue
            problems, notes = strict_problems(schema)
            props = len(schema.get("properties", {}))
            declared = schema.get("$schema", "(no $schema)")
            self.check(f"schema {name}", not problems and schema.get("type") == "object",
                       f"{valid}, type={schema.get('type')}, {props} properties, $schema={declared}, "
                       f"strict problems={len(problems)}" + (f": {'; '.join(problems[:4])}" if problems else ""))
            if notes:
                self.report.note(self.t, f"schema {name}", f"{len(notes)} x " + "; ".join(notes[:3])
                                 + ("; ..." if len(notes) > 3 else ""))

    async def annotations(self) -> None:
        hints = {}
        for tool in getattr(self, "_tools", []):
            ann = field(tool, "annotations")
            hints[tool.name] = (
                field(ann, "read_only_hint", "readOnlyHint"),
                field(ann, "open_world_hint", "openWorldHint"),
            )
        wrong = []
        for name, (read_only, open_world) in hints.items():
            if (read_only is True) != (name in READ_ONLY_TOOLS):
                wrong.append(f"{name} readOnlyHint={read_only}")
            if name == "batch_extract" and open_world is not True:
                wrong.append(f"{name} openWorldHint={open_world}")
        self.check("annotations", bool(hints) and not wrong,
                   "batch_search, job_status and list_jobs read-only, others not, batch_extract open-world"
                   if not wrong else "; ".join(wrong))

    async def valid_calls(self) -> None:
        for tool, arguments, judge in VALID_CALLS:
            name = f"call {tool}"
            bad_args = argument_errors(self.schemas.get(tool, {}), arguments)
            if bad_args:
                self.check(name, False, f"the script's arguments fail the tool's own schema: {bad_args[:2]}")
                continue
            t0 = time.monotonic()
            result = await self.call(tool, arguments)
            ms = (time.monotonic() - t0) * 1000
            if is_error(result):
                self.check(name, False, f"isError true after {ms:.0f} ms: {short(result_text(result))}")
                continue
            ok, figures = judge(structured(result))
            self.check(name, ok, f"isError=false in {ms:.0f} ms, {figures}")
        exported = self.files / "out" / "export.jsonl"
        lines = exported.read_text().splitlines() if exported.exists() else []
        self.check("export file", len(lines) == 3, f"{exported.name}: {len(lines)} lines on disk")

    async def job_calls(self) -> None:
        """Each folder and job tool once: a sync of the server's folder queued
        and followed to its end, the other two folder tools queued, the
        finished job neither cancelled nor retried, a foreign folder refused."""
        async def tool(name: str, arguments: dict) -> dict:
            result = await self.call(name, arguments)
            if is_error(result):
                raise RuntimeError(f"{name} failed: {short(result_text(result))}")
            return structured(result)

        (self.data / "from-mcp.md").write_text("---\ntitle: From MCP\n---\nA note for sync_folder.\n")
        queued = await tool("sync_folder", {"folder": str(self.data)})
        job_id = queued.get("job_id")
        self.check("call sync_folder", queued.get("status") in ("queued", "joined") and bool(job_id),
                   f"status={queued.get('status')} job_id={job_id}")
        states, status = [], {}
        with anyio.fail_after(CALL_TIMEOUT):
            while True:
                status = await tool("job_status", {"job_id": job_id, "include_result": True})
                states.append(status.get("state"))
                if status.get("state") in ("completed", "cancelled", "dead"):
                    break
                await anyio.sleep(0.05)
        imported = (status.get("result") or {}).get("imported")
        self.check("call job_status", status.get("state") == "completed" and imported == 1,
                   f"states seen {sorted(set(states))}, ended {status.get('state')}, imported={imported}")
        listed = await tool("list_jobs", {"folder": str(self.data), "limit": 5})
        ids = [job.get("id") for job in listed.get("jobs", [])]
        self.check("call list_jobs", job_id in ids, f"{len(ids)} jobs of the folder, the sync among them: {job_id in ids}")
        folder = await tool("folder_status", {"folder": str(self.data)})
        last = folder.get("last_summary") or {}
        self.check("call folder_status", bool(folder.get("last_sync")) and last.get("imported") == 1
                   and "job_counts" in folder, f"entities={folder.get('entities')} last imported={last.get('imported')}")
        cancelled = await tool("cancel_job", {"job_id": job_id})
        retried = await tool("retry_job", {"job_id": job_id})
        self.check("call cancel_job and retry_job",
                   cancelled.get("cancelled") is False and retried.get("retried") is False
                   and cancelled.get("state") == "completed",
                   f"a completed job: cancel -> {cancelled}, retry -> {retried}")
        exported = await tool("export_entities", {"folder": str(self.data), "types": ["note"]})
        imported = await tool("import_files", {"folder": str(self.data), "paths": ["from-mcp.md"]})
        self.check("call export_entities and import_files",
                   bool(exported.get("job_id")) and bool(imported.get("job_id")),
                   f"export {exported.get('status')}, import {imported.get('status')}")
        refused = await self.call("sync_folder", {"folder": str(self.files)})
        self.check("refused: a folder the server was not given", is_error(refused)
                   and "not one this server may touch" in result_text(refused),
                   f"isError={is_error(refused)} text={result_text(refused)!r:.120}")

    async def background_calls(self) -> None:
        """A batch tool run as a job: answered at once, followed with
        job_status wait_secs to its output; a rollback asked of a finished
        all-or-nothing call says nothing was undone; a call that writes as it
        goes refuses a rollback."""
        documents = [{"id": f"bg-{i}", "content": f"background document {i}"} for i in range(20)]
        result = await self.call("batch_add", {"documents": documents, "collection": "background",
                                               "generate_embeddings": False, "background": True})
        queued = structured(result)
        job_id = queued.get("job_id")
        self.check("call batch_add with background", not is_error(result) and queued.get("status") == "queued"
                   and bool(job_id), f"{short(result_text(result))}")
        status = structured(await self.call("job_status", {"job_id": job_id, "wait_secs": 30,
                                                            "include_result": True}))
        processed = (status.get("result") or {}).get("processed")
        self.check("job_status wait_secs gives the call's output", status.get("state") == "completed"
                   and processed == 20, f"state={status.get('state')} processed={processed}")
        late = structured(await self.call("cancel_job", {"job_id": job_id, "rollback": True}))
        self.check("cancel_job rollback of a finished call", late.get("cancelled") is False
                   and late.get("rolled_back") is False, f"{late}")
        loose = await self.call("batch_add", {"documents": documents, "collection": "background",
                                              "atomic": False, "background": True})
        refused = await self.call("cancel_job", {"job_id": structured(loose).get("job_id"), "rollback": True})
        self.check("refused: rollback of a call that writes as it goes", is_error(refused)
                   and "writes as it goes" in result_text(refused), f"text={result_text(refused)!r:.120}")

    async def bad_calls(self) -> None:
        for label, tool, arguments, must_mention in BAD_CALLS:
            schema_errors = argument_errors(self.schemas.get(tool, {}), arguments)
            result = await self.call(tool, arguments)
            text = result_text(result)
            ok = is_error(result) and must_mention in text and len(text) >= 10
            self.check(f"refused: {label}", ok,
                       f"isError={is_error(result)} schema errors={len(schema_errors)} text={text!r:.160}")

    async def unknown_tool(self) -> None:
        try:
            result = await self.call("batch_nope", {})
        except Exception as exc:
            error = field(exc, "error")
            code = field(error, "code")
            self.check("unknown tool", code is not None,
                       f"JSON-RPC error {code}: {short(str(field(error, 'message', default=exc)), 120)}")
            return
        self.check("unknown tool", False, f"answered as a tool result, isError={is_error(result)}: {short(result_text(result))}")

    # -- progress and cancellation

    @staticmethod
    def many_documents(prefix: str, count: int) -> list[dict]:
        body = " ".join(f"word{j}" for j in range(60))
        return [{"id": f"{prefix}-{i}", "content": f"{prefix} document {i} {body}"} for i in range(count)]

    async def progress(self) -> None:
        # Seed a collection to search, in three calls of moderate size.
        for part in range(3):
            seeded = await self.call("batch_add", {
                "collection": "progress-probe", "atomic": False, "generate_embeddings": False,
                "documents": self.many_documents(f"prog{part}", 4000)})
            if is_error(seeded):
                self.check("progress", False, f"seeding failed: {short(result_text(seeded))}")
                return
        seen: list[tuple[float, float | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None = None) -> None:
            seen.append((progress, total))

        arguments = {"max_parallel": 2, "queries": [
            {"query": f"word{i % 60} document {i}", "search_type": "text", "limit": 3} for i in range(400)]}
        t0 = time.monotonic()
        result = await self.call("batch_search", arguments, progress_callback=on_progress)
        seconds = time.monotonic() - t0
        request = self.wire.last_tool_call("batch_search") or {}
        token = ((request.get("params") or {}).get("_meta") or {}).get("progressToken")
        on_wire = self.wire.progress_received(token)
        values = [p for _, p, _ in on_wire]
        totals = {t for _, _, t in on_wire}
        increasing = all(b >= a for a, b in zip(values, values[1:]))
        within = all(t is None or p <= t for _, p, t in on_wire)
        self.check("progress", len(seen) >= 2 and len(on_wire) >= 2 and increasing and within and not is_error(result),
                   f"batch_search of 400 queries: {len(seen)} callbacks, {len(on_wire)} on the wire in {seconds:.1f} s, "
                   f"values {values[:3]}..{values[-2:]}, total={sorted(totals, key=str)}, "
                   f"never decreasing={increasing}, never above total={within}, "
                   f"answered={structured(result).get('processed')}")

    async def large_result(self) -> None:
        """A batch_add of the documented maximum (10,000 documents) must come back readable."""
        arguments = {"collection": "bulk", "atomic": False, "generate_embeddings": False,
                     "documents": [{"content": f"bulk document {i}"} for i in range(10000)]}
        t0 = time.monotonic()
        try:
            result = await self.call("batch_add", arguments)
        except Exception as exc:
            self.check("largest batch_add result", False,
                       f"10,000 documents: the client could not read the answer after "
                       f"{time.monotonic() - t0:.1f} s: {describe_exception(exc)}")
            return
        text = result_text(result)
        self.check("largest batch_add result", not is_error(result) and len(structured(result).get("added", [])) == 10000,
                   f"10,000 documents in {time.monotonic() - t0:.1f} s, added={len(structured(result).get('added', []))}, "
                   f"text content {len(text) / 1024:.0f} KiB (plus the same as structuredContent)")

    async def count(self, collection: str) -> int | str:
        result = await self.call("batch_delete", {"filter": f'entity_type = "{collection}"', "max_documents": 10000})
        if is_error(result):
            return f"refused: {short(result_text(result), 100)}"
        return structured(result).get("matched", -1)

    async def cancel_call(self, tool: str, arguments: dict) -> dict:
        """Start a call, cancel it once it reports progress above 0; return what happened."""
        out: dict[str, Any] = {"result": None}
        started = anyio.Event()

        async def on_progress(progress: float, total: float | None, message: str | None = None) -> None:
            if progress and progress > 0:
                started.set()

        async def run_call() -> None:
            out["result"] = await self.s.call_tool(tool, arguments, progress_callback=on_progress)
            started.set()

        async with anyio.create_task_group() as group:
            group.start_soon(run_call)
            with anyio.move_on_after(60):
                await started.wait()
            out["cancelled_at"] = time.monotonic()
            group.cancel_scope.cancel()
        request = self.wire.last_tool_call(tool) or {}
        out["request_id"] = request.get("id")
        out["token"] = ((request.get("params") or {}).get("_meta") or {}).get("progressToken")
        return out

    async def after_cancel(self, label: str, out: dict) -> None:
        """The checks every cancelled call shares: cancel sent, session answers, progress stops."""
        request_id, cancelled_at = out["request_id"], out["cancelled_at"]
        sent = self.wire.cancelled_sent(request_id)
        self.check(f"{label}: notifications/cancelled sent", bool(sent),
                   f"request id {request_id}, {len(sent)} cancel notification(s), "
                   f"{(sent[0] - cancelled_at) * 1000:.0f} ms after the cancel" if sent else f"request id {request_id}: none")
        t0 = time.monotonic()
        with anyio.fail_after(10):
            tools = await self.s.list_tools()
        self.check(f"{label}: session answers after cancel", len(tools.tools) == len(EXPECTED_TOOLS),
                   f"tools/list in {(time.monotonic() - t0) * 1000:.0f} ms, {len(tools.tools)} tools")
        await anyio.sleep(CANCEL_GRACE + 1.0)
        before = [p for t, p, _ in self.wire.progress_received(out["token"]) if t <= cancelled_at]
        late = [p for t, p, _ in self.wire.progress_received(out["token"]) if t > cancelled_at + CANCEL_GRACE]
        answered = self.wire.response_received(request_id)
        self.check(f"{label}: server stops", not late,
                   f"progress before cancel {before[-3:]}, after {CANCEL_GRACE:.0f} s grace: {len(late)} {late[:3]}; "
                   f"response to the cancelled request {'sent' if answered else 'not sent'}")

    async def cancel_atomic_add(self) -> None:
        label = "cancel atomic batch_add"
        arguments = {"collection": "cancel-probe", "atomic": True, "chunk_size": 50,
                     "documents": self.many_documents("cancel", 10000)}
        out = await self.cancel_call("batch_add", arguments)
        if out["result"] is not None:
            self.check(label, False, f"the call finished before it could be cancelled "
                       f"(isError={is_error(out['result'])}); nothing to check")
            return
        await self.after_cancel(label, out)
        counts = []
        deadline = time.monotonic() + CANCEL_WATCH
        while time.monotonic() < deadline:
            counts.append(await self.count("cancel-probe"))
            await anyio.sleep(0.5)
        self.check(f"{label}: nothing written", all(c == 0 for c in counts),
                   f"documents in cancel-probe over {CANCEL_WATCH:.0f} s: {sorted(set(map(str, counts)))}")

    async def cancel_search(self) -> None:
        label = "cancel batch_search"
        arguments = {"max_parallel": 1,
                     "queries": [{"query": f"word{i % 60} document {i}", "search_type": "text", "limit": 100}
                                 for i in range(1000)]}
        out = await self.cancel_call("batch_search", arguments)
        if out["result"] is not None:
            self.check(label, False, f"the call finished before it could be cancelled "
                       f"(isError={is_error(out['result'])}); nothing to check")
            return
        await self.after_cancel(label, out)


# --------------------------------------------------------------------------
# Transports


@asynccontextmanager
async def open_session(streams: Any, wire: Wire):
    read, write = streams[0], streams[1]  # 1.x HTTP also yields a session-id getter
    async with ClientSession(ReceiveTap(read, wire), SendTap(write, wire)) as session:
        yield session


async def run_stdio(binary: str, root: Path, report: Report) -> None:
    data, files = make_workspace(root, "stdio")
    params = StdioServerParameters(
        command=binary,
        args=["serve", "--path", str(data), "--files-root", str(files)],
        env=server_env(),
        cwd=str(files),
    )
    wire = Wire()
    with open(root / "stdio" / "server.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as streams:
            async with open_session(streams, wire) as session:
                await Suite("stdio", session, wire, report, files, data).run()


def start_http_server(binary: str, root: Path) -> tuple[subprocess.Popen, str, Path, Path]:
    data, files = make_workspace(root, "http")
    log_path = root / "http" / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [binary, "serve", "--http", "127.0.0.1:0", "--path", str(data), "--files-root", str(files)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=server_env(), cwd=str(files),
    )
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"serving MCP on (http://\S+/mcp)", log_path.read_text())
        if found:
            return process, found.group(1), files, data
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"no 'serving MCP on' line; stderr: {short(log_path.read_text(), 400)}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def run_http(binary: str, root: Path, report: Report) -> None:
    process, url, files, data = start_http_server(binary, root)
    report.note("http", "server", f"{url} (pid {process.pid})")
    wire = Wire()
    try:
        async with http_transport(url) as streams:
            async with open_session(streams, wire) as session:
                await Suite("http", session, wire, report, files, data).run()
    finally:
        stop(process)
    report.check("http", "server exit", process.returncode is not None,
                 f"exit code {process.returncode} after SIGTERM")


async def main_async(binary: str, root: Path, report: Report) -> None:
    warnings = SdkWarnings()
    sdk_logger = logging.getLogger("mcp")
    sdk_logger.addHandler(warnings)
    sdk_logger.propagate = False
    for transport, runner in (("stdio", run_stdio), ("http", run_http)):
        try:
            await runner(binary, root, report)
        except Exception as exc:
            report.check(transport, "transport", False, f"aborted: {describe_exception(exc)}")
        for message in sorted(set(warnings.drain())):
            report.note(transport, "SDK warning", short(message, 200))


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", help="the directory-sync executable")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = parser.parse_args()
    binary = shutil.which(args.binary) or args.binary
    if not os.access(binary, os.X_OK):
        print(f"FAIL [setup] binary: {binary} is not executable")
        return 1
    root = Path(tempfile.mkdtemp(prefix="mcp-clients-"))
    print(f"mcp SDK {package_version('mcp')}, jsonschema {package_version('jsonschema')}, "
          f"binary {binary}, folder {root}", flush=True)
    report = Report()
    t0 = time.monotonic()
    try:
        anyio.run(main_async, binary, root, report)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(f"{report.passes} passed, {report.failures} failed in {time.monotonic() - t0:.1f} s")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
