"""Sweep files in, configurations out: spec parsing and validation, grid expansion, kernel keys."""
