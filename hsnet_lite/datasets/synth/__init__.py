"""Procedural scene generator behind the embedded benchmark (numpy only, deterministic)."""
