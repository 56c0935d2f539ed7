"""The `sora` command line."""
