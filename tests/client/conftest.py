"""The real-server fixtures of tests/service/conftest.py (`server`, `start_server`,
`service_checkpoint`) and helpers (`support`), for the client's tests: the client
talks to the server exactly as `sora serve` runs it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SERVICE = Path(__file__).resolve().parent.parent / "service"
sys.path.insert(0, str(_SERVICE))  # `from support import ...`, as the service tests do
_spec = importlib.util.spec_from_file_location("client_service_conftest",
                                               _SERVICE / "conftest.py")
assert _spec is not None and _spec.loader is not None
_service = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_service)

server = _service.server
start_server = _service.start_server
service_checkpoint = _service.service_checkpoint
