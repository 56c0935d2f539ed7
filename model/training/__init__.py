"""Offline training code: data, recipes, train loop, evaluation."""
