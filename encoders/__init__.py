"""singrec: encoders package."""
