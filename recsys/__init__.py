"""singrec: recsys package."""
