"""Integration tests (filled in as the feature lands)."""
