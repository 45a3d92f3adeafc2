"""Shared test setup: every test starts from funcgrad's default settings, so a test that turns
on debug_nans (or any other setting) and fails half-way cannot change the tests after it."""

import pytest

import funcgrad as fg


@pytest.fixture(autouse=True)
def _default_settings():
    yield
    fg.config.reset()
