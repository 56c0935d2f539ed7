"""sora.v1: generated stubs (do not edit; run scripts/gen_proto.sh)."""
