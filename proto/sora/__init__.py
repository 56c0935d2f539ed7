"""The `sora` protobuf package."""
