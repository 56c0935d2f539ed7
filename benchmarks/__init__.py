"""Speed benchmarks: `sora bench model` and scripts comparing Sora with other runtimes."""
