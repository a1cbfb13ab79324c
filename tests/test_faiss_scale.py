"""Song indexes within a memory budget (index/faiss_index.py): the key ``auto`` picks by size and memory, the search
tuned to recall@10 >= 0.95 against exact search on held-out songs, and that recall recorded in index.json."""
import json
import shutil

import faiss
import numpy as np
import pytest

from data.errors import SingrecError
from index.build import build_catalogue_index
from index.faiss_index import (PLATEAU_GAIN, TARGET_RECALL, build_song_index, choose_index_key, load_index,
                               parse_memory, recall_at_k, save_index, search)


def clustered(n, d, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 30), d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_key_by_size_and_memory():
    assert choose_index_key(50_000, 384, 1 << 20) == "Flat"  # exact whatever the budget
    assert choose_index_key(1_000_000, 384, 8 << 30) == "IVF4096,Flat" == choose_index_key(1_000_000)
    small = choose_index_key(1_000_000, 384, 200 << 20)  # 1.5 GB of vectors in 200 MiB: compressed
    assert "PQ" in small and "IVF" in small
    assert parse_memory("4G") == 4 << 30 and parse_memory("500MB") == 500 << 20 and parse_memory(123) == 123
    assert parse_memory("auto") > 0
    with pytest.raises(SingrecError, match="memory size"):
        parse_memory("lots")


@pytest.mark.parametrize("key", ["IVF64,Flat", "IVF64,PQ8x4"])
def test_song_index_is_tuned_to_the_target_recall_and_reloads_so(key, tmp_path):
    x = clustered(20_000, 32)
    index, info = build_song_index(x, key, queries=300)
    assert info["factory"] == key and info["recall_queries"] == 300
    ivf = faiss.extract_index_ivf(index)
    if "PQ" in key:  # 4-bit codes cap recall near 0.5: probing stops where it levels off, not at every list
        assert info["recall_at_10"] < TARGET_RECALL and info["nprobe"] < ivf.nlist
    if info["recall_at_10"] < TARGET_RECALL and info["nprobe"] < ivf.nlist:  # stopped where more lists gain little
        exact = np.argsort(-(x[:300] @ x.T), axis=1)[:, :10]
        at = {}
        for nprobe in (info["nprobe"], 2 * info["nprobe"]):
            ivf.nprobe = nprobe
            at[nprobe] = recall_at_k(search(index, x[:300], 10)[1], exact)
        assert at[2 * info["nprobe"]] - at[info["nprobe"]] < 2 * PLATEAU_GAIN  # other queries than the build's
        ivf.nprobe = info["nprobe"]
    save_index(index, tmp_path / "s.faiss", info=info)
    again = load_index(tmp_path / "s.faiss")
    q = x[:50]
    np.testing.assert_array_equal(search(index, q, 10)[1], search(again, q, 10)[1])


def test_index_json_records_the_recall(tiny_index, tiny_catalogue, tiny_encoders, tmp_path):
    from index.store import current_snapshot

    info = json.loads((current_snapshot(tiny_index) / "index.json").read_text())
    assert info["faiss"]["recall_at_10"] == {"timbre": 1.0, "melody": 1.0}  # Flat: exact
    out = tmp_path / "ivf"
    shutil.copytree(tiny_index, out)  # append with nothing new: only the FAISS files are rebuilt
    build_catalogue_index(tiny_catalogue, out, encoders=tiny_encoders, index_key="IVF2,Flat", append=True,
                          progress=False)
    snap = current_snapshot(out)
    info = json.loads((snap / "index.json").read_text())
    assert info["faiss"]["songs"] == "IVF2,Flat" and set(info["faiss"]["recall_at_10"]) == {"timbre", "melody"}
    sidecar = json.loads((snap / "timbre_songs.faiss.json").read_text())
    assert sidecar["recall_queries"] == 12 and 0 < sidecar["recall_at_10"] <= 1 and sidecar["nprobe"] >= 1
