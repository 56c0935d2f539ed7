"""What the front ends share about the server's own lifecycle (not the engines')."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServerState:
    """`draining` turns true at the first SIGTERM/SIGINT: readiness fails at once and new
    requests are refused with 503 while accepted ones finish."""

    draining: bool = False
