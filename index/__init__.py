"""singrec: index package."""
