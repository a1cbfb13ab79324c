"""The synthetic singer catalogue: the embedded default catalogue and all test data.

Model
-----
A **singer** is a fixed parameter vector (:data:`SINGER_PARAMS`, written to ``ground_truth/singers.csv`` as
``p_<name>`` columns). It holds exactly the things that make a voice sound like itself, and nothing that
changes from song to song:

* ``tessitura`` -- centre of the comfortable range (MIDI); with gender and voice type it sets the keys sung;
* ``formant_scale`` -- vocal-tract length as a factor on all formant frequencies (short tract = high formants);
* ``f1_shift``, ``f2_shift`` -- individual vowel placement (relative shift of F1 / F2, darker or brighter vowels);
* ``f3_shift``, ``f4_shift`` -- individual placement of F3 and of F4 and above (set by the shape of the larynx
  tube and pharynx, hardly changed by the vowel: a vowel-independent "fingerprint" of the voice);
* ``open_quotient`` -- fraction of the glottal cycle the folds are open (pressed vs. flow phonation);
* ``tilt`` -- extra source spectral slope, dB/octave (dark vs. bright source);
* ``breath`` -- level of aspiration noise (modulated by the glottal cycle) relative to the voiced source, dB;
* ``jitter``, ``shimmer`` -- cycle-to-cycle f0 and amplitude perturbation, percent;
* ``vib_rate``, ``vib_depth``, ``vib_delay`` -- vibrato rate (Hz), depth (+-cents) and onset delay (s);
* ``sf_gain``, ``sf_freq`` -- the singer's formant cluster: boost (dB) and centre (Hz) near 2.5-3.5 kHz;
* ``nasality`` -- coupling of the nasal tract (nasal pole/zero pair), 0..1;
* ``scoop`` -- depth of the pitch scoop from below at note onsets (cents);
* ``glide`` -- portamento time between legato notes (s).

Distances between standardised parameter vectors define "truly similar singers". Gender, voice type and a
genre-like ``genre`` tag are categorical metadata; the genre sets the priors the parameters are drawn from
(classical: strong singer's formant, wide early vibrato; pop: breathy, late shallow vibrato; ...), so singers of
one genre tend to be neighbours, as on real catalogues.

A **melody** is a phrase of scale degrees, durations in beats, rests and lyrics (one consonant+vowel syllable
per note). Melodies are shared: each is sung by several singers, each singer in their *own* key (fitted to
their tessitura) and tempo (the melody's tempo +-15 %). A **song** is one melody (looped to fill the
duration) sung by one singer.

The **voice** is a source-filter model rendered at 16 kHz:

1. f0 contour (control rate 500 Hz): note targets with per-note intonation error, portamento between legato
   notes, scoops from below, delayed vibrato with slowly wandering rate, slow pitch drift;
2. glottal source: Rosenberg flow-derivative pulses (open quotient, extra tilt) read from band-limited
   wavetables (quarter-octave mipmaps, crossfaded, so no harmonic crosses Nyquist) through a phase accumulator
   with per-cycle jitter and shimmer; aspiration noise gated by the open phase of each cycle;
3. vocal tract, applied in the short-time Fourier domain (512-sample Hann frames at 50 % overlap, each
   zero-padded to 1024 so that the zero-phase filter's ringing does not wrap around): a cascade of seven
   formant resonators per phoneme (vowel table scaled by ``formant_scale`` and the individual shifts, F1
   raised above f0 on high notes as sopranos do), the nasal pole/zero pair, the singer's formant and a
   loudness-dependent brightness; every phoneme target is normalised to the same output power for the note's
   pitch (singers even out their vowels), and log envelopes are interpolated between phoneme anchors so
   formants move smoothly through consonant-vowel transitions;
4. consonants: fricative noise (s, sh, f, h), plosive closures with bursts (p, t, k, b, d, g), nasal murmurs
   (m, n) and liquids/glides (l, r, w, y) as separate noise and voicing envelopes.

Each song then goes through its **own recording chain** (:func:`sample_chain`): EQ (shelves, two peaks,
high-pass and an optional band limit), a synthetic room (exponentially decaying noise impulse response with
early reflections, random RT60, pre-delay and wet level, faster decay at high frequencies), coloured
background noise (random SNR and slope, sometimes mains hum), mild saturation and a random peak level. So
recording conditions vary within a singer, as on real albums, while the voice stays the same.

The default catalogue is 150 singers x 6 songs x 10 s (2.5 hours): every singer sings 6 different melodies,
so singer retrieval can be scored on held-out songs, and each of the 150 melodies is sung by about 6 singers.
It renders at about 200x real time on one core (``benchmarks/synth_speed.py``). A plain MFCC mean+std
nearest neighbour finds a same-singer song first for only about a quarter of the songs
(``benchmarks/mfcc_baseline.py``), while a linear projection of the same statistics learnt on other singers
does far better: the identity is in the voice, and the recording chains are what confuse the baseline.

Everything is deterministic for a seed: every random stream is derived from ``(seed, purpose, indices)`` with
:class:`numpy.random.SeedSequence`, so the files do not depend on the number of worker processes.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
import scipy.signal
from tqdm import tqdm

from data.audio import save_audio
from data.errors import SingrecError

log = logging.getLogger(__name__)

VERSION = 2  # bump whenever rendering changes: a resumed run must not mix old and new songs
DEFAULT_SINGERS = 150
DEFAULT_SONGS = 6         # songs per singer: 1 query + 5 held-out references for singer retrieval
DEFAULT_SECONDS = 10.0    # 150 x 6 x 10 s = 2.5 hours of audio
SINGERS_PER_MELODY = 6    # target ensemble size of each melody

# ----------------------------------------------------------------------------------------------- voices
VOICE_TYPES = {  # gender, tessitura centre (MIDI), formant scale, singer's formant centre (Hz)
    "soprano": ("f", 71.0, 1.19, 3150.0),
    "mezzo": ("f", 67.0, 1.15, 3050.0),
    "alto": ("f", 63.5, 1.11, 2950.0),
    "tenor": ("m", 58.0, 1.03, 2900.0),
    "baritone": ("m", 53.5, 0.98, 2750.0),
    "bass": ("m", 49.5, 0.94, 2600.0),
}

SINGER_PARAMS = ("tessitura", "formant_scale", "f1_shift", "f2_shift", "f3_shift", "f4_shift", "open_quotient",
                 "tilt", "breath", "jitter", "shimmer", "vib_rate", "vib_depth", "vib_delay", "sf_gain", "sf_freq",
                 "nasality", "scoop", "glide")


@dataclass(frozen=True)
class GenrePrior:
    """Mean and spread of the style-dependent singer parameters for one genre."""

    weight: float                          # share of singers
    open_quotient: tuple[float, float]
    tilt: tuple[float, float]              # dB/octave
    breath: tuple[float, float]            # dB
    vib_depth: tuple[float, float]         # +-cents
    vib_delay: tuple[float, float]         # s
    sf_gain: tuple[float, float]           # dB
    nasality: tuple[float, float]
    scoop: tuple[float, float]             # cents
    glide: tuple[float, float]             # s
    voice_types: tuple[float, ...]         # weights over VOICE_TYPES (soprano .. bass)


GENRES = {  # weight, open quotient, tilt, breath, vib depth, vib delay, singer's formant, nasality, scoop, glide
    "classical": GenrePrior(0.2, (0.50, 0.08), (-1.5, 1.8), (-34, 6), (62, 14), (0.12, 0.06), (11, 3.5),
                            (0.15, 0.15), (30, 20), (0.05, 0.02), (3, 2, 1, 2, 2, 1)),
    "pop": GenrePrior(0.3, (0.66, 0.09), (-3.0, 2.0), (-20, 6), (22, 10), (0.40, 0.15), (3, 3.0),
                      (0.30, 0.2), (60, 35), (0.08, 0.03), (2, 2, 1, 2, 1, 0.4)),
    "jazz": GenrePrior(0.15, (0.60, 0.09), (-3.5, 2.0), (-24, 6), (35, 12), (0.30, 0.12), (5, 3.5),
                       (0.25, 0.2), (140, 50), (0.11, 0.04), (1, 2, 2, 1, 2, 1)),
    "folk": GenrePrior(0.15, (0.58, 0.09), (-2.0, 2.0), (-26, 6), (12, 8), (0.45, 0.15), (4, 3.5),
                       (0.35, 0.2), (40, 25), (0.06, 0.03), (2, 2, 2, 2, 2, 1)),
    "soul": GenrePrior(0.2, (0.55, 0.09), (-2.5, 2.0), (-27, 6), (40, 12), (0.22, 0.10), (6, 3.5),
                       (0.30, 0.2), (110, 45), (0.10, 0.04), (1, 2, 2, 2, 1, 0.5)),
}

PARAM_BOUNDS = {  # hard limits after sampling
    "formant_scale": (0.8, 1.4), "f1_shift": (-0.2, 0.2), "f2_shift": (-0.2, 0.2),
    "f3_shift": (-0.16, 0.16), "f4_shift": (-0.16, 0.16),
    "open_quotient": (0.35, 0.85), "tilt": (-8.0, 2.0), "breath": (-48.0, -8.0), "jitter": (0.1, 2.0),
    "shimmer": (0.5, 10.0), "vib_rate": (4.5, 7.0), "vib_depth": (0.0, 110.0), "vib_delay": (0.02, 0.8),
    "sf_gain": (0.0, 18.0), "sf_freq": (2400.0, 3500.0), "nasality": (0.0, 1.0), "scoop": (0.0, 300.0),
    "glide": (0.02, 0.2),
}

FIRST_NAMES = {
    "f": ("ava", "mia", "lena", "nora", "ines", "clara", "maya", "zoe", "lucia", "iris", "ada", "elsa", "yara",
          "hana", "rosa", "leila", "vera", "amara", "sofia", "julia", "emma", "olga", "nina", "tara", "alma",
          "freya", "greta", "ivy", "june", "kira", "luna", "mara", "nadia", "opal", "petra", "rhea", "sara",
          "thea", "una", "wren", "aiko", "bea", "celia", "dina", "esme", "fleur", "gaia", "hedda", "ilse",
          "jade", "kaya", "lotte", "mila", "nell", "ona", "pia", "ruth", "selma", "tove", "vida"),
    "m": ("leo", "omar", "jonas", "hugo", "felix", "ivan", "marco", "theo", "noah", "elias", "ravi", "tomas",
          "luca", "kenji", "diego", "arlo", "bram", "cyrus", "dario", "emil", "finn", "gus", "henrik", "ilya",
          "jude", "kai", "lars", "milo", "nico", "otto", "pablo", "quinn", "rafael", "silas", "tariq", "ugo",
          "viktor", "wim", "yusuf", "zane", "aldo", "bruno", "cas", "dev", "enzo", "farid", "gil", "hal",
          "idris", "joel", "karl", "linus", "mateo", "nils", "oscar", "piet", "rune", "sven", "teo", "vito"),
}
SURNAMES = ("moreno", "lindqvist", "okafor", "tanaka", "silva", "novak", "haddad", "keller", "rossi", "dubois",
            "nakamura", "fischer", "costa", "ivanova", "larsen", "mendes", "oduya", "petrov", "quint", "reyes",
            "sato", "torres", "umber", "varga", "weiss", "yilmaz", "zeller", "abbott", "brandt", "castillo",
            "dahl", "eklund", "ferreira", "garcia", "holm", "ibarra", "jansen", "kovacs", "lopez", "marsh",
            "nolan", "ortiz", "price", "quiroga", "rahman", "stone", "thorne", "ueda", "vance", "ward",
            "xu", "young", "zamora", "alves", "berg", "cruz", "diaz", "engel", "frost", "grant", "hale", "ito",
            "jovic", "kane", "lund", "mori", "nash", "orr", "pike", "rowe", "saar", "tamm", "urso", "vogel")
TITLE_WORDS = (("silver", "golden", "quiet", "distant", "northern", "hollow", "velvet", "paper", "broken",
                "lonely", "crimson", "endless", "secret", "wild", "little", "bitter", "gentle", "summer",
                "winter", "midnight", "morning", "evening", "falling", "burning", "blue", "green", "old"),
               ("river", "moon", "garden", "road", "harbour", "letter", "window", "lantern", "meadow", "sky",
                "rain", "heart", "shore", "bird", "song", "fire", "mountain", "train", "dream", "rose",
                "light", "stone", "city", "wind", "night", "island", "bell"))

# ------------------------------------------------------------------------------------------- phonemes
# Vowel formants (Hz) and bandwidths for an adult male vocal tract (formant_scale = 1).
VOWELS = {
    "a": ((730, 1090, 2440, 3400, 4300), (80, 90, 150, 230, 300)),
    "e": ((480, 1900, 2550, 3450, 4350), (60, 100, 160, 230, 300)),
    "i": ((290, 2250, 3000, 3600, 4400), (60, 100, 170, 250, 300)),
    "o": ((500, 850, 2500, 3350, 4250), (70, 80, 160, 230, 300)),
    "u": ((320, 800, 2300, 3300, 4200), (60, 80, 160, 230, 300)),
    "ae": ((660, 1700, 2400, 3450, 4300), (80, 100, 160, 230, 300)),
    "er": ((490, 1350, 1700, 3300, 4200), (70, 90, 140, 230, 300)),
}
VOICED_TARGETS = {  # consonant-shaped vocal tract: formants, bandwidths, level (dB), high-frequency cut (Hz)
    "m": ((260, 1000, 2200, 3300, 4200), (90, 200, 300, 300, 300), -6.0, 800.0),
    "n": ((260, 1400, 2500, 3400, 4300), (90, 200, 300, 300, 300), -6.0, 900.0),
    "l": ((360, 1000, 2700, 3400, 4300), (70, 120, 150, 200, 250), -3.0, 0.0),
    "r": ((420, 1200, 1600, 3300, 4200), (70, 110, 120, 200, 250), -3.0, 0.0),
}
NOISE_SHAPES = {  # frication / burst spectra: centre (Hz, scaled by formant_scale), width (octaves), level dB
    "s": (6200.0, 0.55, 0.0), "sh": (3000.0, 0.75, 0.0), "f": (4500.0, 2.5, -10.0),
    "t": (4500.0, 0.9, 0.0), "k": (2300.0, 0.55, 0.0), "p": (1100.0, 1.4, -4.0),
}
# A consonant is a list of segments (duration s, voicing 0..1, noise level 0..1, noise shape, tract target);
# tract target None = the following vowel; noise shape "h" = aspiration through the following vowel (the
# shape of a segment without noise is never heard).
CONSONANTS = {
    "": (),
    "s": ((0.095, 0.0, 1.0, "s", None),),
    "sh": ((0.10, 0.0, 0.9, "sh", None),),
    "f": ((0.085, 0.0, 0.6, "f", None),),
    "h": ((0.07, 0.0, 0.45, "h", None),),
    "t": ((0.045, 0.0, 0.0, "t", None), (0.015, 0.0, 0.5, "t", None), (0.025, 0.0, 0.35, "h", None)),
    "k": ((0.05, 0.0, 0.0, "k", None), (0.02, 0.0, 0.5, "k", None), (0.03, 0.0, 0.35, "h", None)),
    "p": ((0.055, 0.0, 0.0, "p", None), (0.012, 0.0, 0.4, "p", None), (0.025, 0.0, 0.3, "h", None)),
    "d": ((0.04, 0.12, 0.0, "t", "m"), (0.012, 0.3, 0.3, "t", None)),
    "b": ((0.045, 0.12, 0.0, "p", "m"), (0.01, 0.3, 0.25, "p", None)),
    "g": ((0.045, 0.12, 0.0, "k", "m"), (0.015, 0.3, 0.3, "k", None)),
    "m": ((0.08, 0.55, 0.0, "s", "m"),),
    "n": ((0.07, 0.55, 0.0, "s", "n"),),
    "l": ((0.06, 0.8, 0.0, "s", "l"),),
    "r": ((0.05, 0.8, 0.0, "s", "r"),),
    "w": ((0.05, 0.8, 0.0, "s", "u"),),
    "y": ((0.045, 0.85, 0.0, "s", "i"),),
}
CONSONANT_WEIGHTS = {"": 3, "s": 2, "sh": 1, "f": 1, "h": 1, "t": 2, "k": 2, "p": 1, "d": 2, "b": 1, "g": 1,
                     "m": 2, "n": 2, "l": 2, "r": 1, "w": 1, "y": 1}
VOWEL_WEIGHTS = {"a": 4, "e": 3, "i": 3, "o": 3, "u": 2, "ae": 1, "er": 1}
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
REST = -99  # scale degree of a rest

# ------------------------------------------------------------------------------------ rendering grid
CTL_HOP = 32       # control-rate hop (samples): f0 and gains at 500 Hz (at 16 kHz)
WIN = 512          # vocal-tract filter frame (Hann, periodic)
HOP = 256          # vocal-tract filter hop (Hann windows at 50 % overlap sum to one)
NFFT = 1024        # zero-padded FFT size: room for +-256 samples of filter ringing around each frame
TABLE_LEN = 4096   # glottal wavetable length (one period; read without interpolation)
TABLE_F0 = 50.0    # lowest mipmap edge (Hz); tables every quarter octave above it
TABLE_BANDS = 24   # 50 Hz .. 3.2 kHz
NOISE_LEVEL = -3.0  # dB, frication vs. voiced path: /s/ about 9 dB, /f/ 19 dB below the vowels (measured)


# ============================================================================================ melodies
@dataclass(frozen=True)
class Melody:
    """A shared tune: scale degrees (``REST`` for rests), durations in beats and one syllable per note.

    ``tempo`` is the reference tempo (BPM); each singer sings it in their own key and tempo.
    """

    melody_id: str
    title: str
    mode: str
    degrees: tuple[int, ...]
    beats: tuple[float, ...]
    syllables: tuple[tuple[str, str], ...]  # (consonant, vowel) per note; ("", "") for rests
    tempo: float

    def semitones(self) -> np.ndarray:
        """Semitones above the tonic of every note (NaN for rests)."""
        scale = SCALES[self.mode]
        return np.array([np.nan if d == REST else 12 * (d // 7) + scale[d % 7] for d in self.degrees])


_RHYTHMS = ((1.0,), (0.5, 0.5), (0.5, 0.5), (1.5, 0.5), (2.0,), (0.75, 0.25), (0.5, 0.5, 1.0), (1.0, 0.5, 0.5),
            (0.5, 1.0, 0.5), (0.25, 0.25, 0.5))  # rhythm cells, in beats


def make_melodies(n: int, rng: np.random.Generator) -> list[Melody]:
    """Generate ``n`` distinct melodies (4-bar phrases with lyrics).

    Parameters
    ----------
    n : number of melodies
    rng : random generator

    Returns
    -------
    list of Melody, ids ``mel-000`` ...
    """
    melodies, titles = [], set()
    cons, cw = zip(*CONSONANT_WEIGHTS.items())
    vows, vw = zip(*VOWEL_WEIGHTS.items())
    cw, vw = np.array(cw, float) / sum(cw), np.array(vw, float) / sum(vw)
    for i in range(n):
        meter = 4 if rng.random() < 0.75 else 3
        bars = 4
        total = meter * bars
        beats: list[float] = []
        while sum(beats) < total - 1e-9:  # fill the bars with rhythm cells, last note long
            cell = _RHYTHMS[rng.integers(len(_RHYTHMS))]
            if sum(beats) + sum(cell) > total - 1:
                beats.append(total - sum(beats))
                break
            beats.extend(cell)
        deg, degrees = 0 if rng.random() < 0.6 else int(rng.choice([2, 4])), []
        for _ in beats:
            degrees.append(deg)
            step = int(rng.choice([-2, -1, -1, 0, 1, 1, 1, 2, 2, 3, -3, 4, -4]))
            deg = int(np.clip(deg + step, -3, 9))
        degrees[-1] = int(rng.choice([0, 0, 4, 7])) if degrees[-2] > 3 else 0  # cadence
        # a breath in the middle of the phrase, and a rest at the end before the tune repeats
        if len(beats) > 6 and rng.random() < 0.5:
            j = len(beats) // 2
            if beats[j] >= 1.0:
                beats[j] -= 0.5
                beats.insert(j + 1, 0.5)
                degrees.insert(j + 1, REST)
        beats.append(float(rng.choice([1.0, 2.0])))
        degrees.append(REST)
        syllables = []
        for d in degrees:
            if d == REST:
                syllables.append(("", ""))
            else:
                syllables.append((str(rng.choice(cons, p=cw)), str(rng.choice(vows, p=vw))))
        title = f"{rng.choice(TITLE_WORDS[0])}-{rng.choice(TITLE_WORDS[1])}"
        title = f"{title}-{i}" if title in titles else title
        titles.add(title)
        melodies.append(Melody(f"mel-{i:03d}", title, "major" if rng.random() < 0.65 else "minor",
                               tuple(degrees), tuple(float(b) for b in beats), tuple(syllables),
                               float(rng.uniform(80, 140))))
    return melodies


# ============================================================================================= singers
def _clip(name: str, x: float) -> float:
    lo, hi = PARAM_BOUNDS[name]
    return float(np.clip(x, lo, hi))


def sample_singers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Draw ``n`` singers: unique human-readable names, categories and the identity parameter vectors.

    Parameters
    ----------
    n : number of singers
    rng : random generator

    Returns
    -------
    DataFrame, one row per singer: ``singer`` (slug such as ``"ava-moreno"``), ``gender`` (f/m),
    ``voice_type``, ``genre``, then one ``p_<name>`` column per entry of :data:`SINGER_PARAMS`
    (see the module docstring for units).
    """
    genres = list(GENRES)
    gw = np.array([GENRES[g].weight for g in genres])
    types = list(VOICE_TYPES)
    rows, names = [], set()
    for _ in range(n):
        genre = genres[rng.choice(len(genres), p=gw / gw.sum())]
        pr = GENRES[genre]
        tw = np.array(pr.voice_types, float)
        vtype = types[rng.choice(len(types), p=tw / tw.sum())]
        gender, tess, fscale, sf_freq = VOICE_TYPES[vtype]
        for _attempt in range(10_000):
            name = f"{rng.choice(FIRST_NAMES[gender])}-{rng.choice(SURNAMES)}"
            if name not in names:
                break
        else:
            raise SingrecError(f"cannot make {n} unique singer names")
        names.add(name)

        def g(spec: tuple[float, float]) -> float:
            return float(rng.normal(*spec))

        p = {
            "tessitura": tess + rng.normal(0, 1.5),
            "formant_scale": _clip("formant_scale", fscale * rng.normal(1, 0.065)),
            "f1_shift": _clip("f1_shift", rng.normal(0, 0.08)),
            "f2_shift": _clip("f2_shift", rng.normal(0, 0.08)),
            "f3_shift": _clip("f3_shift", rng.normal(0, 0.07)),
            "f4_shift": _clip("f4_shift", rng.normal(0, 0.07)),
            "open_quotient": _clip("open_quotient", g(pr.open_quotient)),
            "tilt": _clip("tilt", g(pr.tilt)),
            "breath": _clip("breath", g(pr.breath)),
            "jitter": _clip("jitter", rng.lognormal(np.log(0.5), 0.45)),
            "shimmer": _clip("shimmer", rng.lognormal(np.log(3.0), 0.45)),
            "vib_rate": _clip("vib_rate", rng.normal(5.7, 0.5)),
            "vib_depth": _clip("vib_depth", g(pr.vib_depth)),
            "vib_delay": _clip("vib_delay", g(pr.vib_delay)),
            "sf_gain": _clip("sf_gain", g(pr.sf_gain)),
            "sf_freq": _clip("sf_freq", sf_freq * rng.normal(1, 0.04)),
            "nasality": _clip("nasality", g(pr.nasality)),
            "scoop": _clip("scoop", g(pr.scoop)),
            "glide": _clip("glide", g(pr.glide)),
        }
        rows.append({"singer": name, "gender": gender, "voice_type": vtype, "genre": genre,
                     **{f"p_{k}": round(float(p[k]), 6) for k in SINGER_PARAMS}})
    return pd.DataFrame(rows)


def _params(singer: dict | pd.Series) -> dict[str, float]:
    """Singer parameters by plain name from a singers-table row (``p_`` prefixes optional)."""
    d = dict(singer)
    try:
        return {k: float(d[f"p_{k}"] if f"p_{k}" in d else d[k]) for k in SINGER_PARAMS}
    except KeyError as exc:
        raise SingrecError(f"singer parameters lack {exc.args[0]!r}") from None


# ============================================================================================== chains
def sample_chain(rng: np.random.Generator) -> dict[str, float]:
    """Draw one recording chain (EQ, room, noise, saturation, level) for a song.

    Returns
    -------
    dict of floats: ``hp_hz`` high-pass corner, ``lp_hz`` band limit (0 = none), ``low_db``/``high_db``
    shelves at 200 Hz / 4 kHz, ``eq1_hz``/``eq1_db``/``eq1_q`` and ``eq2_*`` peaking bands, ``rt60`` (s),
    ``wet`` reverb level relative to the direct sound, ``predelay`` (s), ``snr_db`` background noise,
    ``noise_slope`` (dB/octave), ``hum_db`` mains hum relative to the voice (-120 = none),
    ``hum_hz``, ``drive`` saturation (0 = none), ``peak_db`` output peak level (dBFS).
    """
    f1, f2 = np.exp(rng.uniform(np.log(150), np.log(6000), size=2))
    return {
        "hp_hz": float(rng.uniform(40, 160)),
        "lp_hz": float(rng.uniform(5000, 7500)) if rng.random() < 0.2 else 0.0,
        "low_db": float(rng.uniform(-4, 4)),
        "high_db": float(rng.uniform(-5, 3)),
        "eq1_hz": float(f1), "eq1_db": float(rng.uniform(-5, 5)), "eq1_q": float(rng.uniform(0.7, 2.5)),
        "eq2_hz": float(f2), "eq2_db": float(rng.uniform(-5, 5)), "eq2_q": float(rng.uniform(0.7, 2.5)),
        "rt60": float(np.exp(rng.uniform(np.log(0.15), np.log(1.8)))),
        "wet": float(rng.uniform(0.05, 0.45)),
        "predelay": float(rng.uniform(0.0, 0.04)),
        "snr_db": float(rng.uniform(30, 55)),
        "noise_slope": float(rng.uniform(-6, 1)),
        "hum_db": float(rng.uniform(-50, -35)) if rng.random() < 0.2 else -120.0,
        "hum_hz": float(rng.choice([50.0, 60.0])),
        "drive": float(rng.uniform(0.5, 3.0)) if rng.random() < 0.3 else 0.0,
        "peak_db": float(rng.uniform(-12, -1)),
    }


def _chain_eq_db(freqs: np.ndarray, c: dict[str, float]) -> np.ndarray:
    """Magnitude response (dB) of the chain's EQ on ``freqs`` (zero phase)."""
    lf = np.log2(np.maximum(freqs, 1.0))
    db = c["low_db"] / (1 + (freqs / 200.0) ** 2) + c["high_db"] / (1 + (4000.0 / np.maximum(freqs, 1.0)) ** 2)
    for b in ("eq1", "eq2"):
        db += c[f"{b}_db"] * np.exp(-0.5 * ((lf - np.log2(c[f"{b}_hz"])) * c[f"{b}_q"] * 1.2) ** 2)
    db += 10 * np.log10(1 / (1 + (c["hp_hz"] / np.maximum(freqs, 1.0)) ** 4))
    if c["lp_hz"] > 0:
        db += 10 * np.log10(1 / (1 + (freqs / c["lp_hz"]) ** 12))
    return db


def _room_ir(c: dict[str, float], sr: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic room impulse response (direct sound excluded), unit energy."""
    n = int(min(c["rt60"], 1.6) * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    low = scipy.signal.lfilter([0.15], [1, -0.85], noise)  # HF decays faster than LF
    ir = low * np.exp(-6.9 * t / c["rt60"]) + (noise - low) * np.exp(-6.9 * t / (0.45 * c["rt60"]))
    ir *= 1 - np.exp(-t / 0.01)  # diffuse tail builds up
    for d in rng.uniform(0.003, 0.035, size=6):  # early reflections
        ir[int(d * sr)] += rng.uniform(0.3, 0.8) * rng.choice([-1, 1]) * np.sqrt(n) * 0.05
    ir = np.concatenate([np.zeros(int(c["predelay"] * sr)), ir])
    return (ir / np.sqrt(np.sum(ir ** 2))).astype(np.float32)


def _apply_chain(y: np.ndarray, c: dict[str, float], sr: int, rng: np.random.Generator) -> np.ndarray:
    """Room, background noise, hum, saturation and output level (the EQ is applied with the vocal tract).

    The room and the noise share one FFT: direct sound + room = ``Y * (1 + wet * IR)``, and the coloured
    noise is drawn directly as a spectrum and added before the single inverse transform.
    """
    n = y.size
    ir = _room_ir(c, sr, rng)
    nfft = scipy.fft.next_fast_len(n + ir.size, real=True)
    spec = scipy.fft.rfft(y, nfft)
    spec *= 1 + c["wet"] * scipy.fft.rfft(ir, nfft)
    p_voice = 2 * float(np.vdot(spec, spec).real) / nfft / n + 1e-20  # Parseval: mean power of the voice
    grid = np.linspace(0, sr / 2, 513)
    shape_db = c["noise_slope"] * np.log2(np.maximum(grid, 20.0) / 1000.0) + _chain_eq_db(grid, c)
    gain = 10 ** (np.interp(np.linspace(0, sr / 2, spec.size), grid, shape_db) / 20)
    gain *= math.sqrt(p_voice * 10 ** (-c["snr_db"] / 10) / np.mean(gain ** 2) * nfft / 2)
    white = rng.standard_normal((2, spec.size), dtype=np.float32)  # white noise, drawn as its spectrum
    spec += (white[0] + 1j * white[1]) * gain.astype(np.float32)
    y = scipy.fft.irfft(spec, nfft)[:n]
    if c["hum_db"] > -100:
        t = np.arange(sr) / sr  # one second holds a whole number of 50 / 60 Hz periods: tile it
        hum = sum(np.sin(2 * np.pi * k * c["hum_hz"] * t + k) / k for k in (1, 2, 3, 5))
        y += (math.sqrt(2 * p_voice) * 10 ** (c["hum_db"] / 20)) * np.tile(hum.astype(np.float32), n // sr + 1)[:n]
    if c["drive"] > 0:
        y = np.tanh(c["drive"] * y / (np.max(np.abs(y)) + 1e-12))
    y = y * (10 ** (c["peak_db"] / 20) / (np.max(np.abs(y)) + 1e-12))
    return y.astype(np.float32)


# ============================================================================================== voices
def _glottal_tables(open_quotient: float, tilt: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Band-limited glottal flow-derivative wavetables, one per quarter-octave f0 band.

    Returns
    -------
    tables : (TABLE_BANDS + 1, TABLE_LEN) float32; row ``b`` holds the harmonics that stay below 0.475 sr
        for every f0 up to the top of band ``b``. Row 0 has unit RMS.
    amplitudes : (TABLE_LEN // 2 + 1,) amplitude of each harmonic in the tables (index = harmonic number)
    """
    m = 8192
    th = np.arange(m) / m
    tp = open_quotient * 0.7  # opening phase (speed quotient 7:3)
    tn = open_quotient - tp
    flow = np.where(th < tp, 0.5 * (1 - np.cos(np.pi * th / tp)),
                    np.where(th < open_quotient, np.cos(0.5 * np.pi * (th - tp) / tn), 0.0))
    spec = np.fft.rfft(flow)
    k = np.arange(spec.size)
    spec = spec * 1j * k * np.maximum(k, 1) ** (tilt / 6.02)  # derivative (lip radiation) and extra tilt
    rows = np.zeros((TABLE_BANDS + 1, TABLE_LEN // 2 + 1), complex)
    for b in range(TABLE_BANDS + 1):
        kmax = max(1, int(0.475 * sr / (TABLE_F0 * 2 ** ((b + 1) / 4))))
        rows[b, 1:kmax + 1] = spec[1:kmax + 1]
    tables = np.fft.irfft(rows, TABLE_LEN, axis=1)
    norm = 1 / np.sqrt(np.mean(tables[0] ** 2))
    tables *= norm
    amplitudes = 2 * np.abs(spec[:TABLE_LEN // 2 + 1]) / TABLE_LEN * norm
    amplitudes[0] = 0.0
    return tables.astype(np.float32), amplitudes


def _open_phase_table(open_quotient: float) -> np.ndarray:
    """0..1 envelope of the open phase over one glottal cycle, (TABLE_LEN,) float32."""
    th = np.arange(TABLE_LEN) / TABLE_LEN
    return np.where(th < open_quotient, np.sin(np.pi * th / open_quotient) ** 2, 0.0).astype(np.float32)


def _glottal_source(f0: np.ndarray, p: dict[str, float], tables: np.ndarray,
                    rng: np.random.Generator, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Render the glottal source for a per-sample f0 track (Hz, float32 (N,)) from :func:`_glottal_tables`.

    Returns
    -------
    pulses : float32 (N,), flow-derivative pulse train with per-cycle jitter and shimmer
    open_phase : float32 (N,), 0..1 envelope of the open phase of each cycle (gates aspiration)
    """
    cycles0 = np.cumsum(f0 * (1 / sr), dtype=np.float64)
    jit = np.clip(rng.standard_normal(int(cycles0[-1]) + 2, dtype=np.float32), -3, 3)
    f0j = f0 * (1 + 0.01 * p["jitter"] * jit)[cycles0.astype(np.int32)]  # one period factor per cycle
    cycles = np.cumsum(f0j * (1 / sr), dtype=np.float64)
    ci = cycles.astype(np.int32)
    frac = (cycles - ci).astype(np.float32)
    shim = np.clip(rng.standard_normal(int(ci[-1]) + 2, dtype=np.float32), -3, 3)
    amp = (1 + 0.01 * p["shimmer"] * shim)[ci]  # one amplitude factor per cycle

    tables = tables.ravel()
    band = np.clip(4 * np.log2(f0j * (1 / TABLE_F0)), 0, TABLE_BANDS - 1e-3)
    bi = band.astype(np.int32)
    bw = band - bi
    # nearest table sample: with 4096 samples per cycle the phase error is below 1/8000 of a cycle
    i0 = np.minimum((frac * TABLE_LEN).astype(np.int32), TABLE_LEN - 1)  # float32 frac may round to 1.0
    base = bi * TABLE_LEN + i0
    lo = tables[base]
    hi = tables[base + TABLE_LEN]  # crossfade with the next (narrower) band
    hi -= lo
    hi *= bw
    lo += hi
    lo *= amp
    return lo, _open_phase_table(p["open_quotient"])[i0]


def _resonance_db(freqs: np.ndarray, f: np.ndarray, b: np.ndarray, sr: int) -> np.ndarray:
    """Magnitude (dB) of digital two-pole resonators with unit gain at DC.

    ``f``, ``b``: centre frequencies and bandwidths (Hz), shape (..., 1); ``freqs``: (K,). Returns (..., K).
    """
    r = np.exp(-np.pi * b / sr)
    c = 2 * r * np.cos(2 * np.pi * f / sr)
    w = 2 * np.pi * freqs / sr
    re = 1 - c * np.cos(w) + r * r * np.cos(2 * w)
    im = c * np.sin(w) - r * r * np.sin(2 * w)
    return 20 * np.log10(1 - c + r * r) - 10 * np.log10(re * re + im * im)


def _noise_shape_db(freqs: np.ndarray, shape: str, scale: float) -> np.ndarray:
    fc, width, level = NOISE_SHAPES[shape]
    x = np.log2(np.maximum(freqs, 20.0) / (fc * scale)) / width
    return level - np.minimum(12 * x * x, 60.0)


@dataclass
class _Score:
    """A performance laid out in time: notes, phoneme segments and vocal-tract anchors."""

    onset: np.ndarray       # (n_notes,) s
    offset: np.ndarray      # (n_notes,) s
    midi: np.ndarray        # (n_notes,) sung pitch incl. intonation error
    legato: np.ndarray      # (n_notes,) bool: slurred from the previous note
    level_db: np.ndarray    # (n_notes,)
    swell: np.ndarray       # (n_notes,) dynamic shape inside the note
    scoop: np.ndarray       # (n_notes,) cents
    vib_scale: np.ndarray   # (n_notes,)
    phrase_start: np.ndarray  # (n_notes,) s, onset of the note's phrase
    phrase_end: np.ndarray    # (n_notes,) s
    seg_start: np.ndarray   # (n_segs,) s; segments tile [0, end)
    seg_voicing: np.ndarray
    seg_noise: np.ndarray
    seg_noise_shape: list   # noise shape key per segment ("s", ..., ("h", vowel target index))
    anchors_t: np.ndarray   # (n_anchors,) s
    anchors_target: np.ndarray  # (n_anchors,) index into targets
    targets: list           # tract targets: (kind, name, midi)


def _layout(melody: Melody, key: int, tempo: float, seconds: float, p: dict[str, float],
            rng: np.random.Generator) -> _Score:
    """Loop ``melody`` over ``seconds`` at ``tempo`` in ``key`` and place notes, phonemes and anchors."""
    beat = 60.0 / tempo
    semis = melody.semitones()
    notes: list[list] = []  # onset, offset, midi, legato, consonant, vowel
    t = float(rng.uniform(0.05, 0.4))
    prev_rest = True
    while t < seconds:
        for deg, beats, (cons, vowel), semi in zip(melody.degrees, melody.beats, melody.syllables, semis):
            dur = beats * beat
            if deg == REST:
                prev_rest = True
            else:
                onset = t + (rng.normal(0, 0.01) if notes else 0.0)
                if notes:
                    onset = max(onset, notes[-1][0] + 0.05)
                    if not prev_rest:
                        notes[-1][1] = onset  # legato: the previous note lasts until this one starts
                notes.append([onset, t + dur, key + semi + rng.normal(0, 0.08), not prev_rest, cons, vowel])
                prev_rest = False
            t += dur
            if t >= seconds:
                break
    n = len(notes)
    onset = np.array([x[0] for x in notes])
    offset = np.array([x[1] for x in notes])
    legato = np.array([x[3] for x in notes])
    phrase_id = np.cumsum(~legato)
    first = np.flatnonzero(~legato)
    last = np.append(first[1:] - 1, n - 1)
    phrase_start = onset[first][phrase_id - 1]
    phrase_end = offset[last][phrase_id - 1]
    pos = (onset - phrase_start) / np.maximum(phrase_end - phrase_start, 1e-3)  # position in phrase 0..1
    level_db = 3.0 * np.sin(np.pi * pos) + rng.normal(0, 1.2, n)
    midi = np.array([x[2] for x in notes])
    leap = np.diff(midi, prepend=midi[0])
    scoop = p["scoop"] * rng.uniform(0.3, 1.0, n) * np.where(~legato | (leap > 2), 1.0, 0.5)

    seg_start, seg_voicing, seg_noise, seg_shape = [0.0], [0.0], [0.0], ["s"]
    anchors_t, anchors_target = [0.0], [0]
    targets: list[tuple] = []
    tindex: dict[tuple, int] = {}

    def target(kind: str, name: str, m: float) -> int:
        k = (kind, name, round(m))
        if k not in tindex:
            tindex[k] = len(targets)
            targets.append(k)
        return tindex[k]

    for i, (on, off, m, _, cons, vowel) in enumerate(notes):
        vt = target("vowel", vowel, m)
        segs = CONSONANTS[cons]
        cdur = sum(s[0] for s in segs)
        squeeze = min(1.0, 0.45 * (off - on) / cdur) if cdur else 1.0
        t = on
        for dur, voicing, noise, shape, tract in segs:
            dur *= squeeze
            seg_start.append(t)
            seg_voicing.append(voicing)
            seg_noise.append(noise)
            seg_shape.append(("h", vt) if shape == "h" else shape)
            if tract is None:
                anchors_t.append(t + dur / 2)
                anchors_target.append(vt)
            else:
                kind = "vowel" if tract in VOWELS else "consonant"
                anchors_t.append(t + dur / 2)
                anchors_target.append(target(kind, tract, m))
            t += dur
        seg_start.append(t)
        seg_voicing.append(1.0)
        seg_noise.append(0.0)
        seg_shape.append(("h", vt))
        edge = min(0.04, (off - t) / 3)
        anchors_t += [t + edge, off - edge]
        anchors_target += [vt, vt]
        if i + 1 == n or not legato[i + 1]:
            seg_start.append(off)  # rest until the next phrase
            seg_voicing.append(0.0)
            seg_noise.append(0.0)
            seg_shape.append(("h", vt))
    anchors_target[0] = anchors_target[1]
    at = np.array(anchors_t)
    keep = np.append(np.diff(at) > 1e-4, True)  # strictly increasing anchor times
    return _Score(onset, offset, midi, legato, level_db, rng.uniform(-0.1, 0.25, n), scoop,
                  rng.uniform(0.8, 1.2, n), phrase_start, phrase_end, np.array(seg_start),
                  np.array(seg_voicing), np.array(seg_noise), seg_shape, at[keep],
                  np.array(anchors_target)[keep], targets)


def _smooth_noise(n: int, knots_every: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random curve (unit-variance knots, linearly interpolated), shape (n,)."""
    knots = rng.standard_normal(n // knots_every + 2)
    return np.interp(np.arange(n) / knots_every, np.arange(knots.size), knots)


def _controls(score: _Score, p: dict[str, float], n_ctl: int, ctl_sr: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Control-rate f0 (Hz), voicing amplitude, noise amplitude and loudness (dB) tracks, shape (n_ctl,)."""
    t = np.arange(n_ctl) / ctl_sr
    k = np.clip(np.searchsorted(score.onset, t, side="right") - 1, 0, score.onset.size - 1)
    tau = np.maximum(t - score.onset[k], 0.0)
    target = score.midi[k]
    prev = np.where(score.legato[k], score.midi[np.maximum(k - 1, 0)], target)
    g = np.clip(tau / p["glide"], 0, 1)
    pitch = target + (prev - target) * (1 - g * g * (3 - 2 * g))  # portamento (smoothstep)
    pitch -= score.scoop[k] / 100 * np.exp(-tau / 0.07)  # scoop from below
    rate = p["vib_rate"] * (1 + 0.04 * _smooth_noise(n_ctl, int(ctl_sr * 0.5), rng))
    phase = 2 * np.pi * np.cumsum(rate) / ctl_sr + rng.uniform(0, 2 * np.pi)
    vib_env = np.clip((tau - p["vib_delay"]) / 0.25, 0, 1) * score.vib_scale[k]
    pitch += (p["vib_depth"] * vib_env * np.sin(phase) + 6 * _smooth_noise(n_ctl, int(ctl_sr * 0.7), rng)) / 100
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)

    dur = np.maximum(score.offset[k] - score.onset[k], 1e-3)
    level_db = score.level_db[k]
    amp = 10 ** (level_db / 20) * (1 + score.swell[k] * np.sin(np.pi * np.clip(tau / dur, 0, 1)))
    amp *= np.clip((t - score.phrase_start[k]) / 0.05, 0, 1) * np.clip((score.phrase_end[k] - t) / 0.09, 0, 1)
    s = np.clip(np.searchsorted(score.seg_start, t, side="right") - 1, 0, score.seg_start.size - 1)
    box_v, box_n = np.ones(7) / 7, np.ones(3) / 3  # 14 ms and 6 ms ramps
    voicing = np.convolve(score.seg_voicing[s] * amp, box_v, mode="same")
    noise = np.convolve(score.seg_noise[s] * amp, box_n, mode="same")
    return f0, voicing, noise, level_db


def _tract_db(targets: list[tuple], p: dict[str, float], freqs: np.ndarray, sr: int,
              harmonics: np.ndarray) -> np.ndarray:
    """Vocal-tract log magnitude (dB) of phoneme targets ``(kind, name, midi)`` for this singer.

    Each target is normalised so that the glottal source (harmonic ``amplitudes`` from
    :func:`_glottal_tables`) sung at the target's pitch comes out at unit power: a singer keeps the loudness
    of vowels even when a harmonic meets a formant (F1 tuning on high notes would otherwise add 20 dB).
    Murmurs (m, n, l, r) then sit their own level below.

    Returns
    -------
    (n_targets, len(freqs)) float64
    """
    scale = p["formant_scale"]
    fs, bs, level, cut = [], [], [], []
    for kind, name, m in targets:
        if kind == "vowel":
            f, b = (np.array(x, float) for x in VOWELS[name])
            level.append(0.0)
            cut.append(np.inf)
        else:
            fv, bv, lv, hf = VOICED_TARGETS[name]
            f, b = np.array(fv, float), np.array(bv, float)
            level.append(lv)
            cut.append(hf or np.inf)
        f = f * scale
        f[0] *= 1 + p["f1_shift"]
        f[1] *= 1 + p["f2_shift"]
        f[2] *= 1 + p["f3_shift"]
        f[3:] *= 1 + p["f4_shift"]
        for k, gap in ((2, 400.0), (3, 600.0), (4, 600.0)):  # shifts never merge formants into one huge peak
            f[k] = max(f[k], f[k - 1] + gap * scale)
        if kind == "vowel":
            f[0] = max(f[0], 1.08 * 440.0 * 2 ** ((m - 69) / 12))  # F1 tuned above f0 on high notes
        b[0] *= 1 + 0.6 * p["nasality"]
        fs.append(np.append(f, [1.2 * f[4], 1.4 * f[4]]))  # two higher poles keep energy above F5
        bs.append(np.append(b, [350.0, 450.0]))
    f, b = np.array(fs), np.array(bs)
    b = np.where(f < 0.49 * sr, b, 1e6)  # poles above Nyquist: flattened away
    f = np.minimum(f, 0.49 * sr)
    db = _resonance_db(freqs, f[..., None], b[..., None], sr).sum(axis=1)
    # nasal pole/zero pair: the zero moves up from the pole with nasal coupling; the pair is scaled so that
    # it boosts the murmur region and damps the F1 region without changing the overall level much
    nz = 270.0 + 250.0 * p["nasality"]
    db += (_resonance_db(freqs, np.array([270.0]), np.array([140.0]), sr)
           - _resonance_db(freqs, np.array([nz]), np.array([150.0]), sr) + 20 * np.log10(nz / 270.0))
    db += p["sf_gain"] * np.exp(-0.5 * ((freqs - p["sf_freq"]) / 380.0) ** 2)
    db -= 12 * np.log2(np.maximum(freqs / np.array(cut)[:, None], 1.0))  # murmurs: little energy up high
    for t, (_, _, m) in enumerate(targets):
        f0 = 440.0 * 2 ** ((m - 69) / 12)
        k = np.arange(1, min(harmonics.size - 1, int(0.475 * sr / f0)) + 1)
        power = np.sum(0.5 * harmonics[k] ** 2 * 10 ** (np.interp(k * f0, freqs, db[t]) / 10))
        db[t] -= 10 * np.log10(power + 1e-30)
    return db + np.array(level)[:, None]


def _frames(x: np.ndarray, n_frames: int) -> np.ndarray:
    """rfft (size NFFT, zero-padded) of Hann-windowed frames centred on k*HOP; complex (n_frames, NFFT//2+1)."""
    pad = np.zeros(n_frames * HOP + WIN, np.float32)
    pad[WIN // 2:WIN // 2 + x.size] = x
    buf = np.zeros((n_frames, NFFT), np.float32)  # zero-padded in place: much faster than rfft(n=NFFT)
    np.multiply(np.lib.stride_tricks.sliding_window_view(pad, WIN)[::HOP][:n_frames], _hann(), out=buf[:, :WIN])
    return scipy.fft.rfft(buf, axis=1, overwrite_x=True)


def _overlap_add(spec: np.ndarray, n: int) -> np.ndarray:
    """Inverse of :func:`_frames` after zero-phase filtering: irfft and overlap-add, shape (n,).

    The filtered frame occupies buffer samples [-PRE, WIN + PRE) with PRE = (NFFT - WIN) / 2; its
    non-causal part (zero-phase filters ring both ways) wraps to the end of the buffer and is put back here.
    """
    fr = scipy.fft.irfft(spec, NFFT, axis=1).astype(np.float32)
    nf, nb = fr.shape[0], NFFT // HOP
    blocks = fr.reshape(nf, nb, HOP)
    pre = (NFFT - WIN) // 2 // HOP  # blocks of pre-ringing at the end of the buffer
    out = np.zeros((nf + nb, HOP), np.float32)
    for j in range(nb):
        dest = j + pre if j < nb - pre else j - (nb - pre)  # shift so that buffer time -PRE is block 0
        out[dest:dest + nf] += blocks[:, j]
    start = pre * HOP + WIN // 2
    return out.ravel()[start:start + n] * (HOP / (WIN / 2))


def _upsample(x: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of a control-rate track (hop CTL_HOP) to ``n`` samples, float32."""
    x = x.astype(np.float32)
    ramp = np.arange(CTL_HOP, dtype=np.float32) / CTL_HOP
    k = -(-n // CTL_HOP)
    return (x[:k, None] + (x[1:k + 1] - x[:k])[:, None] * ramp).ravel()[:n]


_HANN: list[np.ndarray] = []


def _hann() -> np.ndarray:
    if not _HANN:
        _HANN.append(scipy.signal.get_window("hann", WIN, fftbins=True).astype(np.float32))
    return _HANN[0]


def synthesize_song(singer_params: dict | pd.Series, melody: Melody, *, key: int, tempo: float,
                    chain_params: dict[str, float] | None, seconds: float, sr: int = 16000,
                    rng: np.random.Generator) -> np.ndarray:
    """Render one song: ``melody`` sung by one singer in ``key`` at ``tempo``, through a recording chain.

    Parameters
    ----------
    singer_params : a row of :func:`sample_singers` (``p_<name>`` entries) or a dict of plain parameter names
    melody : the tune (looped to fill ``seconds``)
    key : MIDI note of the tonic
    tempo : beats per minute
    chain_params : from :func:`sample_chain`; ``None`` renders the dry voice (peak -3 dBFS)
    seconds : duration
    sr : sample rate, Hz
    rng : random generator (performance details, source noise, room and background noise)

    Returns
    -------
    np.ndarray, float32, shape (round(seconds * sr),), peak below 1
    """
    p = _params(singer_params)
    n = int(round(seconds * sr))
    if n < sr // 10:
        raise SingrecError(f"song too short ({seconds} s)")
    score = _layout(melody, int(key), float(tempo), seconds, p, rng)
    ctl_sr = sr / CTL_HOP
    n_ctl = n // CTL_HOP + 2
    f0_c, voicing_c, noise_c, level_c = _controls(score, p, n_ctl, ctl_sr, rng)
    f0, voicing, noise_amp = (_upsample(x, n) for x in (f0_c, voicing_c, noise_c))

    tables, harmonics = _glottal_tables(p["open_quotient"], p["tilt"], sr)
    pulses, open_phase = _glottal_source(f0, p, tables, rng, sr)
    white = rng.standard_normal((2, n), dtype=np.float32)
    source = voicing * (pulses + 10 ** (p["breath"] / 20) * white[0] * (0.2 + open_phase))
    frication = noise_amp * white[1]

    freqs = np.fft.rfftfreq(NFFT, 1 / sr)
    ln = np.log(10) / 20  # dB -> natural log of magnitude
    eq = _chain_eq_db(freqs, chain_params) if chain_params is not None else 0.0
    tract = _tract_db(score.targets, p, freqs, sr, harmonics)  # (n_targets, K) dB
    n_frames = n // HOP + 1
    ft = np.arange(n_frames) / (sr / HOP)
    a = np.clip(np.searchsorted(score.anchors_t, ft, side="right") - 1, 0, score.anchors_t.size - 1)
    b = np.minimum(a + 1, score.anchors_t.size - 1)
    span = np.maximum(score.anchors_t[b] - score.anchors_t[a], 1e-6)
    w = np.clip((ft - score.anchors_t[a]) / span, 0, 1)[:, None].astype(np.float32)
    tract_ln = ((tract + eq) * ln).astype(np.float32)
    env_v = tract_ln[score.anchors_target[a]]
    env_v += (tract_ln[score.anchors_target[b]] - env_v) * w
    loud = level_c[np.minimum((ft * ctl_sr).astype(int), n_ctl - 1)].astype(np.float32)
    bright = (0.6 * ln * np.clip(np.log2(np.maximum(freqs, 1.0) / 1000.0), -1, 3)).astype(np.float32)
    env_v += loud[:, None] * bright[None, :]

    shapes = {}  # noise path: each frame takes the shape of the nearest noisy segment
    for sh in score.seg_noise_shape:
        if sh not in shapes:
            db = tract[sh[1]] - 1 if isinstance(sh, tuple) else _noise_shape_db(freqs, sh, p["formant_scale"])
            shapes[sh] = ((db + NOISE_LEVEL + eq) * ln).astype(np.float32)
    keys = list(shapes)
    noise_tab = np.stack([shapes[s] for s in keys])
    seg_key = np.array([keys.index(s) for s in score.seg_noise_shape])
    noisy = np.flatnonzero(score.seg_noise > 0)
    if noisy.size:
        seg_end = np.append(score.seg_start[1:], seconds)
        centres = 0.5 * (score.seg_start[noisy] + seg_end[noisy])
        j = np.searchsorted(centres, ft)
        lo, hi = np.clip(j - 1, 0, centres.size - 1), np.clip(j, 0, centres.size - 1)
        nearest = np.where(np.abs(ft - centres[lo]) <= np.abs(ft - centres[hi]), lo, hi)
        env_n = noise_tab[seg_key[noisy[nearest]]]
    else:
        env_n = np.broadcast_to(noise_tab[:1], (n_frames, freqs.size))

    spec = _frames(source, n_frames) * np.exp(env_v)
    if noisy.size:
        spec += _frames(frication, n_frames) * np.exp(env_n)
    y = _overlap_add(spec, n)
    if chain_params is None:
        y *= 10 ** (-3 / 20) / (np.max(np.abs(y)) + 1e-12)
    else:
        y = _apply_chain(y, chain_params, sr, rng)
    fade = np.linspace(0, 1, int(0.01 * sr), endpoint=False, dtype=np.float32)
    y[:fade.size] *= fade
    y[-fade.size:] *= fade[::-1]
    return y


# =========================================================================================== catalogue
def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent random stream for ``(seed, purpose, indices...)``."""
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _n_melodies(singers: int, songs: int) -> int:
    """Melody bank size: about SINGERS_PER_MELODY singers per melody, at least 2 whenever possible."""
    slots = singers * songs
    return max(songs, min(round(slots / SINGERS_PER_MELODY), slots // 2))


def _choose_key(melody: Melody, tessitura: float, used: set[int], rng: np.random.Generator) -> int:
    """Tonic (MIDI) putting the melody's middle near the singer's tessitura, preferring keys not yet used
    for this melody by other singers."""
    semis = melody.semitones()
    mid = 0.5 * (np.nanmin(semis) + np.nanmax(semis))
    ideal = tessitura - mid + rng.normal(0, 1.2)
    cands = np.arange(round(ideal) - 3, round(ideal) + 4)
    order = np.lexsort((rng.random(cands.size), np.abs(cands - ideal)))
    for c in cands[order]:
        if int(c) not in used:
            return int(c)
    return int(cands[order[0]])


def plan_catalogue(singers: pd.DataFrame, melodies: list[Melody], songs: int, seed: int) -> pd.DataFrame:
    """Assign melodies, keys, tempos and recording chains to every (singer, song).

    Each singer sings ``songs`` different melodies; melodies are spread evenly (least-sung first, random
    ties), so every melody is sung by about the same number of singers.

    Returns
    -------
    DataFrame, one row per song: ``path`` (``audio/<singer>/<NN-title>.flac``), ``singer``, ``singer_idx``,
    ``song_idx``, ``melody_id``, ``title``, ``key``, ``tempo`` and ``chain_<name>`` columns.
    """
    rng = _rng(seed, 3)
    by_id = {m.melody_id: m for m in melodies}
    count = np.zeros(len(melodies), int)
    keys_used: dict[str, set[int]] = {m.melody_id: set() for m in melodies}
    rows = []
    for i, s in enumerate(singers.itertuples(index=False)):
        order = np.lexsort((rng.random(len(melodies)), count))[:songs]
        count[order] += 1
        for j, mi in enumerate(sorted(order, key=lambda x: rng.random())):
            mel = melodies[mi]
            key = _choose_key(mel, s.p_tessitura, keys_used[mel.melody_id], rng)
            keys_used[mel.melody_id].add(key)
            chain = sample_chain(_rng(seed, 5, i, j))
            rows.append({"path": f"audio/{s.singer}/{j + 1:02d}-{mel.title}.flac", "singer": s.singer,
                         "singer_idx": i, "song_idx": j, "melody_id": mel.melody_id, "title": mel.title,
                         "key": key, "tempo": round(by_id[mel.melody_id].tempo * rng.uniform(0.85, 1.15), 1),
                         **{f"chain_{k}": v for k, v in chain.items()}})
    return pd.DataFrame(rows)


def _render_job(job: dict) -> float:
    """Render and write one song (run in a worker process); returns its duration in seconds."""
    rng = _rng(job["seed"], 4, job["singer_idx"], job["song_idx"])
    y = synthesize_song(job["singer"], job["melody"], key=job["key"], tempo=job["tempo"],
                        chain_params=job["chain"], seconds=job["seconds"], sr=job["sr"], rng=rng)
    save_audio(job["out"], y, sr=job["sr"], subtype="PCM_16")
    return y.size / job["sr"]


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)


def _write_json(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def singer_truth_path(catalogue: str | Path) -> Path:
    """``ground_truth/singers.csv`` of a synthesized catalogue, given its folder or its manifest file."""
    catalogue = Path(catalogue)
    return (catalogue.parent if catalogue.suffix else catalogue) / "ground_truth" / "singers.csv"


def synthesize_catalogue(out: str | Path, *, singers: int = DEFAULT_SINGERS, songs: int = DEFAULT_SONGS,
                         seconds: float = DEFAULT_SECONDS, seed: int = 0, sample_rate: int = 16000,
                         workers: int = 1) -> Path:
    """Write a synthetic singer catalogue (audio, manifest and ground truth) to ``out``.

    Layout::

        out/audio/<singer>/<NN-title>.flac   mono PCM_16 at ``sample_rate``
        out/manifest.csv                     path (relative to out), singer, gender, voice_type, genre,
                                             melody_id, title, key, tempo
        out/ground_truth/songs.csv           path, singer, melody_id, title, key, tempo, chain_* parameters
        out/ground_truth/singers.csv         singer, gender, voice_type, genre, p_* identity parameters
        out/synth.json                       arguments, version, counts, total seconds (written last)

    Every file is written atomically. If ``synth.json`` shows a finished run with the same arguments,
    existing audio files are kept and only missing ones are rendered. The result is bit-identical for a
    given seed whatever ``workers`` is.

    Parameters
    ----------
    out : output folder (created)
    singers : number of singers
    songs : songs per singer (each a different melody)
    seconds : duration of every song
    seed : random seed
    sample_rate : Hz
    workers : processes rendering in parallel

    Returns
    -------
    Path of ``manifest.csv``.

    Raises
    ------
    SingrecError : invalid arguments or an output path that is not a folder.
    """
    if singers < 1 or songs < 1:
        raise SingrecError(f"need at least one singer and one song per singer (got {singers} x {songs})")
    if not 1.0 <= seconds <= 600:
        raise SingrecError(f"seconds must be between 1 and 600 (got {seconds})")
    if sample_rate < 8000:
        raise SingrecError(f"sample_rate must be at least 8000 Hz (got {sample_rate})")
    if workers < 1:
        raise SingrecError(f"workers must be at least 1 (got {workers})")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SingrecError("output exists and is not a folder", out)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    args = {"singers": singers, "songs": songs, "seconds": float(seconds), "seed": seed,
            "sample_rate": sample_rate}
    info_path = out / "synth.json"
    resume = False
    if info_path.exists():
        try:
            old = json.loads(info_path.read_text())
            resume = old.get("version") == VERSION and old.get("args") == args
        except (OSError, ValueError):
            pass
        if not resume:
            info_path.unlink()  # the folder no longer describes a finished run

    t0 = time.perf_counter()
    singer_df = sample_singers(singers, _rng(seed, 1))
    melodies = make_melodies(_n_melodies(singers, songs), _rng(seed, 2))
    plan = plan_catalogue(singer_df, melodies, songs, seed)
    by_id = {m.melody_id: m for m in melodies}
    singer_rows = singer_df.to_dict("records")
    chain_cols = [c for c in plan.columns if c.startswith("chain_")]
    jobs = []
    for r in plan.to_dict("records"):
        path = out / r["path"]
        if resume and path.exists():
            continue
        jobs.append({"seed": seed, "singer_idx": r["singer_idx"], "song_idx": r["song_idx"],
                     "singer": singer_rows[r["singer_idx"]], "melody": by_id[r["melody_id"]], "key": r["key"],
                     "tempo": r["tempo"], "chain": {c[6:]: r[c] for c in chain_cols}, "seconds": float(seconds),
                     "sr": sample_rate, "out": str(path)})
    log.info("synthesizing %d songs (%d singers x %d, %g s each, %d melodies) into %s with %d worker(s); "
             "%d already present", len(jobs), singers, songs, seconds, len(melodies), out, workers,
             len(plan) - len(jobs))
    bar = tqdm(total=len(jobs), unit="song", desc="synth", disable=None)
    if workers == 1:
        for job in jobs:
            _render_job(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for fut in as_completed([pool.submit(_render_job, job) for job in jobs]):
                fut.result()
                bar.update()
    bar.close()

    meta = singer_df[["singer", "gender", "voice_type", "genre"]]
    manifest = plan[["path", "singer"]].merge(meta, on="singer", how="left")
    manifest = manifest.join(plan[["melody_id", "title", "key", "tempo"]])
    _write_csv(manifest, out / "manifest.csv")
    _write_csv(plan.drop(columns=["singer_idx", "song_idx"]), out / "ground_truth" / "songs.csv")
    _write_csv(singer_df, out / "ground_truth" / "singers.csv")
    total = len(plan) * float(seconds)
    _write_json({"version": VERSION, "args": args,
                 "counts": {"singers": singers, "songs": len(plan), "melodies": len(melodies)},
                 "total_seconds": total, "singer_params": list(SINGER_PARAMS)}, info_path)
    took = time.perf_counter() - t0
    log.info("wrote %d songs (%.1f h of audio) in %.1f s", len(plan), total / 3600, took)
    stray = {str(p.relative_to(out).as_posix()) for p in (out / "audio").glob("*/*.flac")} - set(plan["path"])
    if stray:
        log.warning("%d audio files under %s are not part of this catalogue (left in place)",
                    len(stray), out / "audio")
    return out / "manifest.csv"
