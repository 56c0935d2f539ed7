"""service/config.py Settings: precedence (CLI flags > env > config file > defaults),
validation with one clear message, secrets never shown; `sora serve` exits 2 on bad
settings."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from cli.common import DEFAULT_CHECKPOINT
from cli.main import main
from service.config import DEFAULT_MODEL_REPOSITORY, Settings, SettingsError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SORA_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = Settings.load()
    assert (s.host, s.http_port, s.grpc_port) == ("0.0.0.0", 8000, 50051)
    assert s.model_repository == DEFAULT_MODEL_REPOSITORY == DEFAULT_CHECKPOINT
    assert s.max_body_bytes == 1 << 20 and s.max_batch_texts == 64
    assert s.drain_timeout_s == 30 and s.api_keys == [] and s.log_format == "text"
    assert s.engine_config().max_batch_sequences == 64
    assert s.compile == s.engine_config().compile == "background"
    assert s.compile_cache_dir is None
    assert Settings.load(compile="on").compile == "wait"  # the deprecated names still work
    assert Settings.load(compile="auto").compile == "background"


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str) -> None:
    path = tmp_path / f"sora{suffix}"
    if suffix == ".yaml":
        path.write_text("http_port: 1001\ngrpc_port: 1002\nmax_waiting: 7\nlog_format: json\n")
    else:
        path.write_text("http_port = 1001\ngrpc_port = 1002\nmax_waiting = 7\n"
                        'log_format = "json"\n')
    monkeypatch.setenv("SORA_GRPC_PORT", "2002")
    monkeypatch.setenv("SORA_MAX_WAITING", "8")
    s = Settings.load(path, max_waiting=9, http_port=None)  # None: flag not given
    assert s.http_port == 1001  # file
    assert s.grpc_port == 2002  # env over file
    assert s.max_waiting == 9  # flag over env
    assert s.log_format == "json"
    assert s.engine_config().max_waiting == 9


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yml"
    path.write_text("max_batch_texts: 5\n")
    monkeypatch.setenv("SORA_CONFIG_FILE", str(path))
    assert Settings.load().max_batch_texts == 5


def test_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SORA_API_KEYS", "k1, k2")
    monkeypatch.setenv("SORA_CORS_ORIGINS", '["https://a.example"]')
    s = Settings.load()
    assert s.api_key_values() == ["k1", "k2"]
    assert s.cors_origins == ["https://a.example"]


def test_api_keys_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings.load(api_keys=["hunter2"])
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.log_summary())
    with pytest.raises(SettingsError) as e:
        Settings.load(api_keys=["hunter2", ""])
    assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"http_port": 70000}, "http_port"),
        ({"log_format": "xml"}, "log_format"),
        ({"log_level": "loud"}, "log_level"),
        ({"dtype": "int3"}, "dtype"),
        ({"device": "tpu"}, "device"),
        ({"max_new_tokens": 10, "default_max_new_tokens": 20}, "default_max_new_tokens"),
        ({"tls_cert_file": "/x.pem"}, "tls_cert_file"),
        ({"http_port": 9000, "grpc_port": 9000}, "differ"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"torch_threads": -1}, "torch_threads"),
        ({"event_loop": "trio"}, "event_loop"),
        ({"compile": "yes"}, "compile"),
    ],
)
def test_invalid_settings_one_message(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(SettingsError) as e:
        Settings.load(**kwargs)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("http_port: [\n")
    with pytest.raises(SettingsError, match="not valid"):
        Settings.load(bad)
    unknown = tmp_path / "u.toml"
    unknown.write_text("htp_port = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'htp_port'"):
        Settings.load(unknown)
    with pytest.raises(SettingsError, match="does not exist"):
        Settings.load(tmp_path / "missing.yaml")


def test_sora_serve_bad_settings_exit_2(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["serve", "--http-port", "70000"]) == 2
    monkeypatch.setenv("SORA_LOG_FORMAT", "xml")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "http_port" in err and "SORA_LOG_FORMAT" in err and "Traceback" not in err


def test_sora_serve_missing_repository_exit_2(tmp_path: Path) -> None:
    assert main(["serve", "--model-repository", str(tmp_path / "nope"), "--no-grpc"]) == 2


def test_torch_threads_setting_applies_at_start(tmp_path: Path) -> None:
    import torch

    from service.main import SoraServer

    # tests/conftest.py's torch_threads fixture puts the count back afterwards.
    SoraServer(Settings.load(model_repository=tmp_path, torch_threads=1))
    assert torch.get_num_threads() == 1


def test_event_loop_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    assert Settings.load().loop_factory() is uvloop.new_event_loop  # auto, installed
    assert Settings.load(event_loop="uvloop").loop_factory() is uvloop.new_event_loop
    assert Settings.load(event_loop="asyncio").loop_factory() is None
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert Settings.load().loop_factory() is None  # auto falls back to asyncio's loop
    with pytest.raises(SettingsError, match=r"event_loop.*uvloop is not installed"):
        Settings.load(event_loop="uvloop")
