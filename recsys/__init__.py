"""singrec: recsys package (ranking and evaluation).

The ranking API is importable from the package itself: ``from recsys import Recommender, Song, Audio,
Embedded, Mix`` (the same objects as in :mod:`recsys.rank`). No module of this package imports ``recsys``
itself, so this import cannot close a cycle (tests/test_layout.py checks it).
"""
from recsys.rank import Audio, Embedded, Mix, Recommender, Song

__all__ = ["Audio", "Embedded", "Mix", "Recommender", "Song"]
