"""Batch work over files: encode, decode and roundtrip folders safely (plan, run, write)."""
