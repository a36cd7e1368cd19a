"""Orchestration of a sweep's chunks: planning, execution, parts on disk, sizing, progress."""
