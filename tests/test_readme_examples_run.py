"""The README's client examples run against a real server, as written.

The examples are read from README.md itself (the fenced code blocks of the sections
"### REST", "### gRPC", "### Python client" and "### Open Inference Protocol"), never
copied here, and run against the `server` fixture of tests/service/conftest.py, with
`localhost:8000` / `localhost:50051` replaced by its ports and the model name
`sora-default` by its model:

- every `curl` command (backslash continuations and `;`-joined commands included) runs
  with the real `curl` binary; it must exit 0 with a 2xx status, and its output must be
  JSON (Server-Sent Events ending in `event: done` for `-N` streams; Prometheus text for
  `/metrics`). A command that sends `Bearer KEY` runs while the server requires key KEY;
- every `grpcurl` command is EMULATED (grpcurl is not installed here): its flags
  (`-plaintext`, `-d`, `-H`) and arguments are parsed, the method is resolved through
  the server's reflection service (as grpcurl does), the `-d` JSON becomes the request
  with protobuf's JSON mapping (`json_format.ParseDict`: field names, enum names,
  unknown fields rejected), and the call (unary or server-streaming) goes over a real
  gRPC channel and must end OK; `list` and `describe` use the reflection service too.
  An unknown flag fails the test, so the README cannot use what is not emulated;
- every ```python block runs in a fresh interpreter; it must exit 0 and print something.

A last test checks that each task (translate, summarize, answer) has a curl, a grpcurl
and a Python example.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTIONS = ("### REST", "### gRPC", "### Python client", "### Open Inference Protocol")
HTTP_ADDR, GRPC_ADDR, MODEL = "localhost:8000", "localhost:50051", "sora-default"
TASKS = ("translate", "summarize", "answer")

pytestmark = pytest.mark.timeout(300)

# The real-server fixtures live in tests/service/conftest.py, which only tests below
# tests/service see; load that module under its own name and re-export them.
_spec = importlib.util.spec_from_file_location(
    "readme_service_conftest", ROOT / "tests" / "service" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_service = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_service)
server = _service.server
service_checkpoint = _service.service_checkpoint
_support_spec = importlib.util.spec_from_file_location(
    "readme_service_support", ROOT / "tests" / "service" / "support.py"
)
assert _support_spec is not None and _support_spec.loader is not None
_support = importlib.util.module_from_spec(_support_spec)
_support_spec.loader.exec_module(_support)
parse_sse = _support.parse_sse


# --- reading the README -------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    section: str
    lang: str
    code: str


def readme_blocks() -> list[Block]:
    """The fenced code blocks of the client sections, in order."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for heading in SECTIONS:
        start = text.index("\n" + heading) + 1
        end = re.compile(r"^#{1,3} ", re.M).search(text, start + len(heading))
        body = text[start:end.start() if end else len(text)]
        for m in re.finditer(r"^```(\w*)\n(.*?)^```$", body, re.M | re.S):
            blocks.append(Block(heading.removeprefix("### "), m.group(1), m.group(2)))
    return blocks


def shell_commands(script: str) -> list[list[str]]:
    """Split a shell snippet into argv lists the way sh does for these simple
    commands: quotes ('...' keeps newlines, "..." with backslash escapes), backslash
    continuations, `;` and newlines between commands, `#` comments."""
    commands: list[list[str]] = []
    argv: list[str] = []
    token: list[str] | None = None
    i, n = 0, len(script)

    def end_token() -> None:
        nonlocal token
        if token is not None:
            argv.append("".join(token))
            token = None

    def end_command() -> None:
        nonlocal argv
        end_token()
        if argv:
            commands.append(argv)
        argv = []

    while i < n:
        c = script[i]
        if c == "\\" and i + 1 < n:
            if script[i + 1] != "\n":
                token = (token or []) + [script[i + 1]]
            else:
                end_token()
            i += 2
            continue
        if c == "'":
            j = script.index("'", i + 1)
            token = (token or []) + [script[i + 1:j]]
            i = j + 1
            continue
        if c == '"':
            j, part = i + 1, []
            while script[j] != '"':
                if script[j] == "\\" and script[j + 1] in '"\\$`':
                    j += 1
                part.append(script[j])
                j += 1
            token = (token or []) + part
            i = j + 1
            continue
        if c == "#" and token is None:
            i = script.find("\n", i) if "\n" in script[i:] else n
            continue
        if c in ";\n":
            end_command()
        elif c in " \t":
            end_token()
        else:
            token = (token or []) + [c]
        i += 1
    end_command()
    return commands


BLOCKS = readme_blocks()
COMMANDS = [
    (b.section, argv) for b in BLOCKS if b.lang in ("bash", "sh", "shell")
    for argv in shell_commands(b.code)
]
CURLS = [(s, a) for s, a in COMMANDS if a[0] == "curl"]
GRPCURLS = [(s, a) for s, a in COMMANDS if a[0] == "grpcurl"]
PYTHONS = [b for b in BLOCKS if b.lang == "python"]


def label(section: str, argv: list[str]) -> str:
    """A test id: the section, the program and its target (URL path or method)."""
    if argv[0] == "curl":
        url = next(a for a in argv if HTTP_ADDR in a).removeprefix(HTTP_ADDR)
        target = url + (" stream" if "-N" in argv else "")
    else:
        target = " ".join(a for a in argv[argv.index(GRPC_ADDR) + 1:])
    return f"{section}: {argv[0]} {target}"


def localize(text: str, running: Any) -> str:
    """The README's addresses and model name -> the test server's."""
    text = text.replace(HTTP_ADDR, running.http_url.removeprefix("http://"))
    if running.grpc_target is not None:
        text = text.replace(GRPC_ADDR, running.grpc_target)
    return text.replace(MODEL, running.registry.default_model)


def test_the_readme_has_examples() -> None:
    assert len(CURLS) >= 5 and len(GRPCURLS) >= 5 and len(PYTHONS) >= 4


# --- curl ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "argv", [a for _, a in CURLS], ids=[label(s, a) for s, a in CURLS]
)
def test_curl_example(server: Any, argv: list[str]) -> None:
    curl = shutil.which("curl")
    assert curl, "the curl binary is needed (apt-get install curl)"
    args = [localize(a, server) for a in argv[1:]]
    keys = ["KEY"] if any("Bearer KEY" in a for a in args) else []
    with server.api_keys(*keys):
        done = subprocess.run(
            [curl, *args, "-sS", "--max-time", "120", "-w", "\n%{http_code}"],
            capture_output=True, text=True, timeout=150,
        )
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    assert code.startswith("2"), f"HTTP {code}: {body}"
    url = next(a for a in args if not a.startswith("-") and "127.0.0.1" in a)
    if url.endswith("/metrics"):
        assert "# TYPE sora_requests_total" in body
    elif "-N" in args:
        events = parse_sse(body)
        assert events and events[-1][0] == "done", body
    else:
        reply = json.loads(body)
        if "/v1/" in url and url.rsplit("/", 1)[-1] in TASKS:
            assert reply["results"], reply


# --- grpcurl (emulated) -------------------------------------------------------------

@dataclass
class Grpcurl:
    address: str
    verb: str  # "list", "describe" or "call"
    symbol: str | None
    data: str | None
    headers: list[tuple[str, str]]


def parse_grpcurl(argv: list[str]) -> Grpcurl:
    """grpcurl's command line: [flags] ADDRESS (list|describe) [SYMBOL] | SERVICE/METHOD."""
    data, headers, plaintext, positional = None, [], False, []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-plaintext", "--plaintext"):
            plaintext = True
        elif arg in ("-d", "--d"):
            data = next(args)
        elif arg in ("-H", "--H", "-rpc-header", "--rpc-header"):
            key, _, value = next(args).partition(":")
            headers.append((key.strip().lower(), value.strip()))
        elif arg.startswith("-"):
            raise AssertionError(f"grpcurl flag {arg!r} is not emulated by this test")
        else:
            positional.append(arg)
    assert plaintext, "the test server speaks plaintext gRPC"
    address, *rest = positional
    if rest and rest[0] in ("list", "describe"):
        return Grpcurl(address, rest[0], rest[1] if len(rest) > 1 else None, data, headers)
    assert len(rest) == 1, f"expected one SERVICE/METHOD, got {rest}"
    return Grpcurl(address, "call", rest[0], data, headers)


def run_grpcurl(cmd: Grpcurl) -> list[dict[str, Any]]:
    """Do what grpcurl does over reflection; return the JSON it would print."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(cmd.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        services = list(database.get_services())
        if cmd.verb == "list":
            if cmd.symbol is None:
                return [{"services": services}]
            service = pool.FindServiceByName(cmd.symbol)
            return [{"methods": [m.full_name for m in service.methods]}]
        if cmd.verb == "describe":
            names = [cmd.symbol] if cmd.symbol else services
            described = []
            for name in names:
                try:
                    desc: Any = pool.FindServiceByName(name)
                    described.append({name: [m.name for m in desc.methods]})
                except KeyError:
                    desc = pool.FindMessageTypeByName(name)
                    described.append({name: [f.name for f in desc.fields]})
            return described
        assert cmd.symbol is not None
        service_name, _, method_name = cmd.symbol.replace("/", ".").rpartition(".")
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        request_type = message_factory.GetMessageClass(method.input_type)
        reply_type = message_factory.GetMessageClass(method.output_type)
        request = json_format.ParseDict(json.loads(cmd.data or "{}"), request_type())
        path = f"/{service_name}/{method_name}"
        assert not method.client_streaming, "client streaming is not used in the README"
        kwargs: dict[str, Any] = {
            "request_serializer": request_type.SerializeToString,
            "response_deserializer": reply_type.FromString,
        }
        if method.server_streaming:
            call = channel.unary_stream(path, **kwargs)
            replies = list(call(request, metadata=cmd.headers or None, timeout=120))
        else:
            call = channel.unary_unary(path, **kwargs)
            replies = [call(request, metadata=cmd.headers or None, timeout=120)]
        return [json_format.MessageToDict(r) for r in replies]


@pytest.mark.parametrize(
    "argv", [a for _, a in GRPCURLS], ids=[label(s, a) for s, a in GRPCURLS]
)
def test_grpcurl_example(server: Any, argv: list[str]) -> None:
    if server.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    cmd = parse_grpcurl([localize(a, server) for a in argv])
    try:
        out = run_grpcurl(cmd)
    except grpc.RpcError as e:  # what grpcurl would report, and exit non-zero
        pytest.fail(f"grpcurl {cmd.symbol}: {e.code()} {e.details()}")
    assert out, "grpcurl printed nothing"
    request = json.loads(cmd.data or "{}")
    if cmd.verb == "list" and cmd.symbol is None:
        assert {"sora.v1.Sora", "inference.GRPCInferenceService",
                "grpc.health.v1.Health"} <= set(out[0]["services"])
    elif cmd.verb == "describe":
        assert all(next(iter(d.values())) for d in out), out
    elif cmd.symbol and cmd.symbol.endswith("Health/Check"):
        assert out[0]["status"] == "SERVING"
    elif cmd.symbol and cmd.symbol.endswith("/GenerateStream"):
        assert out[-1]["finishReason"].startswith("FINISH_REASON_"), out
    elif cmd.symbol and cmd.symbol.endswith("/Detect"):
        assert out[0]["languages"][0]["language"], out
    elif cmd.symbol and cmd.symbol.startswith("sora.v1.Sora/"):
        inputs = request.get("texts", request.get("questions"))
        assert len(out[0]["results"]) == len(inputs), out
    elif cmd.symbol and cmd.symbol.endswith("/ModelInfer"):
        assert {o["name"] for o in out[0]["outputs"]} >= {"text"}, out


# --- Python -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "block", PYTHONS,
    ids=[f"{b.section}: python {i}" for i, b in enumerate(PYTHONS)],
)
def test_python_example(server: Any, block: Block) -> None:
    code = localize(block.code, server)
    if "grpc" in code and server.grpc_target is None:
        pytest.skip("the gRPC front end is not available")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the example printed nothing"


# --- coverage -----------------------------------------------------------------------

def test_every_task_has_curl_grpcurl_and_python_examples() -> None:
    grpc_methods = {"translate": "Translate", "summarize": "Summarize", "answer": "Answer"}
    for task in TASKS:
        assert any(f"/v1/{task}" in " ".join(a) for _, a in CURLS), f"no curl for {task}"
        assert any(f"sora.v1.Sora/{grpc_methods[task]}" in a for _, c in GRPCURLS for a in c), (
            f"no grpcurl for {task}"
        )
        assert any(f"/v1/{task}" in b.code for b in PYTHONS), f"no HTTP Python for {task}"
        assert any(f"stub.{grpc_methods[task]}(" in b.code for b in PYTHONS), (
            f"no gRPC Python for {task}"
        )
