"""`sora serve`: the HTTP + gRPC server.

Settings come from, highest precedence first: these flags, SORA_* environment
variables, the --config / SORA_CONFIG_FILE file (YAML or TOML), the defaults. With no
arguments it serves the shipped checkpoint on HTTP 8000 and gRPC 50051.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve models over HTTP and gRPC", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Every dest is a Settings field; None (not given) leaves lower-precedence sources.
    p.add_argument("--config", type=Path, default=None, help="YAML or TOML settings file")
    net = p.add_argument_group("network")
    net.add_argument("--host", default=None, help="address to listen on (default 0.0.0.0)")
    net.add_argument("--http-port", type=int, default=None, help="default 8000 (0: any free)")
    net.add_argument("--grpc-port", type=int, default=None, help="default 50051 (0: any free)")
    net.add_argument("--event-loop", choices=["auto", "asyncio", "uvloop"], default=None,
                     help="auto (default): uvloop where installed")
    net.add_argument("--no-grpc", dest="grpc_enabled", action="store_const", const=False,
                     default=None, help="serve HTTP only")
    models = p.add_argument_group("models")
    models.add_argument("--model-repository", type=Path, default=None,
                        help="a checkpoint, or ROOT/NAME[/VERSION] checkpoints "
                        "(default: the shipped checkpoints/sora-default)")
    models.add_argument("--default-model", default=None)
    models.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    models.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16")
    models.add_argument("--quantize-int8", action="store_const", const=True, default=None,
                        help="int8 dynamic quantization (CPU)")
    models.add_argument("--compile", choices=["background", "wait", "off", "on", "auto"],
                        default=None,
                        help="encoder and decode steps through torch.compile: background "
                        "(default; serve eagerly at once, swap the compiled steps in when "
                        "built; CPU fp32 with a C++ compiler), wait (compile before ready), "
                        "off. on/auto: deprecated names of wait/background")
    models.add_argument("--compile-cache-dir", type=Path, default=None,
                        help="inductor's on-disk cache, reused by the next start")
    models.add_argument("--engine-process", action=argparse.BooleanOptionalAction, default=None,
                        help="run each model's engine in a process of its own")
    models.add_argument("--no-warmup", dest="warmup", action="store_const", const=False,
                        default=None)
    limits = p.add_argument_group("limits")
    for name, kind in (
        ("max-batch-sequences", int), ("max-batch-tokens", int), ("max-source-tokens", int),
        ("max-new-tokens", int), ("default-max-new-tokens", int), ("max-waiting", int),
        ("max-input-chars", int), ("max-segments", int), ("waiting-served-ratio", float),
        ("max-waiting-steps", int), ("max-body-bytes", int),
        ("max-batch-texts", int), ("request-timeout-s", float), ("drain-timeout-s", float),
        ("grpc-max-message-bytes", int),
    ):
        limits.add_argument(f"--{name}", type=kind, default=None)
    sec = p.add_argument_group("security")
    sec.add_argument("--api-key", dest="api_keys", action="append", default=None,
                     help="accepted API key (repeatable). Command lines are visible to "
                     "other users: prefer SORA_API_KEYS or the config file")
    sec.add_argument("--tls-cert-file", type=Path, default=None)
    sec.add_argument("--tls-key-file", type=Path, default=None)
    sec.add_argument("--tls-client-ca-file", type=Path, default=None,
                     help="require client certificates signed by this CA (mTLS)")
    sec.add_argument("--cors-origin", dest="cors_origins", action="append", default=None)
    logs = p.add_argument_group("logging")
    # Not `log_level`: the top-level `sora --log-level` default would shadow it.
    logs.add_argument("--log-level", dest="serve_log_level", default=None)
    logs.add_argument("--log-format", choices=["text", "json"], default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.config import Settings, SettingsError

    flags = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    # `sora --log-level X serve` works too; `sora serve --log-level X` wins.
    top = getattr(args, "log_level", "INFO")
    flags["log_level"] = args.serve_log_level or (top if top.upper() != "INFO" else None)
    try:
        settings = Settings.load(args.config, **flags)
    except SettingsError as e:
        print(f"sora serve: error: {e}", file=sys.stderr)
        return 2
    if not settings.model_repository.exists():
        print(f"sora serve: error: model repository {settings.model_repository} does not exist "
              "(give --model-repository or SORA_MODEL_REPOSITORY)", file=sys.stderr)
        return 2
    from service.main import run as run_server

    return run_server(settings)
