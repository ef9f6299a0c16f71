"""Keyshift."""
