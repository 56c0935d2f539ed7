"""benchmarks/load.py: the servers it starts get their own thread settings, not the
load generator's."""

from __future__ import annotations

from benchmarks.load import parse_args, server_env


def test_server_env_drops_client_thread_limits() -> None:
    env = server_env({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/bin"},
                     torch_threads=2, max_batch_sequences=None)
    assert env == {"PATH": "/bin", "SORA_TORCH_THREADS": "2"}


def test_server_threads_default_leaves_the_server_its_own() -> None:
    args = parse_args(["--model-repository", "x"])
    assert args.server_threads is None
    assert server_env({"OMP_NUM_THREADS": "1"}, torch_threads=args.server_threads) == {}
