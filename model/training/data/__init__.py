"""Offline data: the Debian DDTP builder and readers for user data files."""
