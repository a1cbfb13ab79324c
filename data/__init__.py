"""singrec: data package."""
