"""singrec: app package."""
