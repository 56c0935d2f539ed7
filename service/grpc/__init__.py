"""The gRPC front end: the sora.v1.Sora service, health, reflection and auth."""
