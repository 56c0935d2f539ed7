"""Sora's gRPC contract: the .proto sources and the Python stubs generated from them
(scripts/gen_proto.sh). Import the stubs as `from proto.sora.v1 import sora_pb2`."""
