"""Sora model: pure model code, shared by offline training and the inference service."""
