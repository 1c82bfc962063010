"""What the tests share besides fixtures: servers, traffic, images, stubs and the helpers around them.
``tests/conftest.py`` holds the fixtures only and builds them from here."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
"""The checkout's root."""
