"""Strict JAX for every test: rank promotion is an error, so a silent broadcast cannot hide a bug."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def tiny_sweep(tmp_path):
    """Writes a small sweep file and returns its path."""

    def write(text: str, name: str = "tiny.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
