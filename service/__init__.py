"""Sora inference service: one engine per model, shared by the HTTP and gRPC front ends."""
