"""Server settings: one `Settings` object, read once at start-up and passed down.

Where a setting comes from, highest precedence first:

1. command-line flags (`sora serve --http-port 9000`),
2. environment variables, named `SORA_` + the setting in upper case
   (`SORA_HTTP_PORT=9000`; lists as JSON or comma-separated: `SORA_API_KEYS=k1,k2`),
3. a config file given by `--config FILE` or `SORA_CONFIG_FILE` (YAML `.yaml`/`.yml`
   or TOML `.toml`; keys are the setting names: `http_port: 9000`),
4. the defaults below.

An invalid value from any of these stops start-up with one message naming the
setting (exit code 2). API keys are held as secrets and never logged.

Only this module and the CLI read the environment; everything below receives a
`Settings` (or the `EngineConfig` it builds) explicitly.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from model.checkpoint import DEFAULT_CHECKPOINT
from model.device import compile_mode
from service.engine.config import EngineConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: TOML config files need the tomli backport
    try:
        import tomli as tomllib
    except ImportError:
        tomllib = None

ENV_PREFIX = "SORA_"
CONFIG_FILE_ENV = "SORA_CONFIG_FILE"
DEFAULT_MODEL_REPOSITORY = DEFAULT_CHECKPOINT  # the shipped checkpoint
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MiB = 1 << 20

# The config file Settings.load() was given; read by ConfigFileSource.
_config_file: ContextVar[Path | None] = ContextVar("sora_config_file", default=None)


class SettingsError(Exception):
    """Settings that cannot start a server; the message is meant for the operator."""


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML or TOML config file."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            if tomllib is None:
                raise SettingsError("TOML config files need Python 3.11+ (or tomli)")
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise SettingsError(f"config file {path}: expected a .yaml, .yml or .toml file")
    except (ValueError, yaml.YAMLError) as e:  # TOMLDecodeError is a ValueError
        raise SettingsError(f"config file {path} is not valid: {e}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of setting: value")
    return data


class ConfigFileSource(PydanticBaseSettingsSource):
    """Values from the config file named by Settings.load() or SORA_CONFIG_FILE."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        path = _config_file.get()
        if path is None and os.environ.get(CONFIG_FILE_ENV):
            path = Path(os.environ[CONFIG_FILE_ENV])
        return read_config_file(path) if path is not None else {}


def _split_list(value: Any) -> Any:
    """Env values for list settings: a JSON list or comma-separated items."""
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("["):
            return json.loads(value)
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    """Everything `sora serve` can be told. See the module docstring for precedence."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, protected_namespaces=()
    )

    # -- network -------------------------------------------------------------------------
    host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=0, le=65535, description="0 picks a free port")
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="0 picks a free port")
    grpc_enabled: bool = True
    grpc_max_message_bytes: int = Field(default=4 * MiB, ge=1024)
    # The event loop both servers share. uvloop (libuv; its loop machinery in C) spends
    # less Python time per request, time the engine thread would otherwise wait for
    # (they share the GIL). auto: uvloop where installed (the serve extra on Linux and
    # macOS), else asyncio's own loop.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"

    # -- models --------------------------------------------------------------------------
    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    default_model: str | None = None  # None: the first model in the repository
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    quantize_int8: bool = False
    # Encoder and decode steps through torch.compile (inductor): ~1.2-1.3x a CPU decode
    # step, ~1.3x a batch-64 encoder pass, paid for with ~90 s of compiling on 2 cores
    # (~30 s with inductor's on-disk cache, compile_cache_dir).
    # background: ready as soon as the model is loaded, serving eagerly; compiled on a
    # thread of its own and swapped in between two engine steps (CPU float32 with a C++
    # compiler; elsewhere eager; a failing compile only logs why). wait: compile before
    # ready, and a failure stops start-up (benchmarks). off: never. on / auto: the
    # earlier names of wait / background.
    compile: str = "background"
    # inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR): compiled kernels and graphs a
    # restart reuses. None: inductor's default, under /tmp.
    compile_cache_dir: Path | None = None
    # torch intra-op threads; 0 keeps torch's default (one per core). On a small CPU, one
    # fewer than the cores leaves the event loop a core of its own.
    torch_threads: int = Field(default=0, ge=0)
    # Run each model's engine in a process of its own; this process keeps HTTP, gRPC and
    # tokenization. In one process the engine thread waits for the GIL whenever the
    # front ends run Python (README: serving figures). False: an engine thread here.
    engine_process: bool = True

    # -- batching limits (EngineConfig) --------------------------------------------------
    max_batch_sequences: int = Field(default=64, ge=1)
    max_batch_tokens: int = Field(default=16384, ge=1)
    max_source_tokens: int = Field(default=0, ge=0)
    max_new_tokens: int = Field(default=256, ge=1)
    default_max_new_tokens: int = Field(default=128, ge=1)
    max_waiting: int = Field(default=1024, ge=1)
    max_input_chars: int = Field(default=100_000, ge=1)
    max_segments: int = Field(default=256, ge=1)
    waiting_served_ratio: float = Field(default=0.3, ge=0)
    max_waiting_steps: int = Field(default=20, ge=0)
    warmup: bool = True

    # -- requests ------------------------------------------------------------------------
    max_body_bytes: int = Field(default=1 * MiB, ge=1)
    max_batch_texts: int = Field(default=64, ge=1)  # texts in one request
    request_timeout_s: float | None = Field(
        default=60.0, gt=0, description="default deadline when the client sets none; null = none"
    )
    drain_timeout_s: float = Field(default=30.0, ge=0)

    # -- security ------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="empty: no authentication"
    )
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set: clients must present a certificate (mTLS)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # -- logging -------------------------------------------------------------------------
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags (init kwargs) > environment > config file > defaults.
        return init_settings, env_settings, ConfigFileSource(settings_cls)

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("api_keys")
    @classmethod
    def _keys_not_empty(cls, value: list[SecretStr]) -> list[SecretStr]:
        if any(not k.get_secret_value().strip() for k in value):
            raise ValueError("API keys must be non-empty strings")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.upper()
            if value not in LOG_LEVELS:
                raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return value

    @field_validator("compile")
    @classmethod
    def _compile(cls, value: str) -> str:
        return compile_mode(value)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"expected one of {', '.join(DTYPES)}")
        return value

    @field_validator("event_loop")
    @classmethod
    def _event_loop(cls, value: str) -> str:
        if value == "uvloop" and importlib.util.find_spec("uvloop") is None:
            raise ValueError("uvloop is not installed (pip install uvloop, or use auto)")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "auto" and value.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError("expected auto, cpu, cuda or cuda:N")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.grpc_enabled and self.http_port and self.http_port == self.grpc_port:
            raise ValueError("http_port and grpc_port must differ")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: {path} does not exist")
        try:
            self.engine_config()
        except ValueError as e:
            raise ValueError(str(e)) from None
        return self

    # -- derived -------------------------------------------------------------------------

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            max_batch_sequences=self.max_batch_sequences,
            max_batch_tokens=self.max_batch_tokens,
            max_source_tokens=self.max_source_tokens,
            max_new_tokens=self.max_new_tokens,
            default_max_new_tokens=self.default_max_new_tokens,
            max_waiting=self.max_waiting,
            max_input_chars=self.max_input_chars,
            max_segments=self.max_segments,
            waiting_served_ratio=self.waiting_served_ratio,
            max_waiting_steps=self.max_waiting_steps,
            warmup=self.warmup,
            device=self.device,
            dtype=self.dtype,
            quantize_int8=self.quantize_int8,
            compile=self.compile,
        )

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def api_key_values(self) -> list[str]:
        return [k.get_secret_value() for k in self.api_keys]

    def loop_factory(self) -> Callable[[], asyncio.AbstractEventLoop] | None:
        """What asyncio.Runner should build the servers' loop with (None: asyncio's)."""
        if self.event_loop == "asyncio" or importlib.util.find_spec("uvloop") is None:
            return None
        import uvloop

        return uvloop.new_event_loop

    def log_summary(self) -> dict[str, object]:
        """The settings as safe to log: secrets replaced by a count."""
        data = self.model_dump(exclude={"api_keys"})
        data["api_keys"] = f"<{len(self.api_keys)} keys>"
        return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}

    @classmethod
    def load(cls, config_file: Path | str | None = None, **overrides: Any) -> Settings:
        """Settings from `overrides` (CLI flags; None values are ignored), the
        environment, the config file (this argument, else SORA_CONFIG_FILE) and the
        defaults. Raises SettingsError with one readable message."""
        values = {k: v for k, v in overrides.items() if v is not None}
        token = _config_file.set(Path(config_file) if config_file is not None else None)
        try:
            return cls(**values)
        except ValidationError as e:
            raise SettingsError(describe_errors(e)) from None
        finally:
            _config_file.reset(token)


def describe_errors(error: ValidationError) -> str:
    """`invalid setting http_port (SORA_HTTP_PORT): ...`, one line per problem."""
    lines = []
    for err in error.errors():
        loc = [str(p) for p in err.get("loc", ())]
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        if not loc:
            lines.append(f"invalid settings: {msg}")
            continue
        name = loc[0]
        if err.get("type") == "extra_forbidden":
            lines.append(f"unknown setting {name!r}")
            continue
        shown = "" if name == "api_keys" else f" (got {err.get('input')!r})"
        lines.append(
            f"invalid setting {'.'.join(loc)} ({ENV_PREFIX}{name.upper()}): {msg}{shown}"
        )
    return "; ".join(lines)

