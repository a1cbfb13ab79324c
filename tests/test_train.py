"""Training plumbing: a tiny run learns and writes a reloadable checkpoint; resume; bad checkpoints; bad files."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from data.catalogue import Catalogue
from data.errors import SingrecError
from encoders.checkpoint import load_encoder, read_checkpoint
from encoders.timbre import TimbreConfig, TimbreEncoder, TimbreNet, nt_xent, sample_views
from encoders.base import retrieval_metrics
from encoders.train import load_waves, split_by_song, train
from encoders.timbre import SongBank

TINY = TimbreConfig(channels=16, stat_channels=32, emb_dim=16, proj_dim=8, dilations=(1,), batch_size=3,
                    warmup_steps=2, lr=3e-3, pitch="neg", stretch="none", transform_variants=1, epochs=3)


def _run(catalogue, out, **kw):
    args = dict(encoder="timbre", seed=0, progress=False, command="pytest", timbre_config=TINY, threads=1, init="none")
    args.update(kw)
    return train(catalogue, out, **args)


@pytest.fixture(scope="module")
def trained(tiny_catalogue, tmp_path_factory):
    """One uninterrupted 3-epoch run, shared by the tests below."""
    return _run(tiny_catalogue, tmp_path_factory.mktemp("trained"))["timbre"]


def test_split_is_by_song_seeded_and_stratified():
    songs = pd.DataFrame({"song_id": [f"s{i}" for i in range(20)], "singer": ["a"] * 10 + ["b"] * 5 + ["c"] * 5})
    tr, va = split_by_song(songs, 0.2, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == 20
    assert len(va) == 4 and sum(v in [f"s{i}" for i in range(10)] for v in va) == 2
    assert split_by_song(songs, 0.2, seed=0) == (tr, va)
    assert split_by_song(songs, 0.2, seed=1) != (tr, va)
    solo = pd.DataFrame({"song_id": ["x"], "singer": ["z"]})
    assert split_by_song(solo, 0.5, seed=0) == (["x"], [])  # a lone song always trains


def test_retrieval_metrics_on_a_toy_example():
    emb = np.eye(4, dtype=np.float32)[[0, 0, 1, 1, 2]]  # songs 0,1 identical; 2,3 identical; 4 alone
    m = retrieval_metrics(emb, ["a", "a", "b", "b", "c"])
    assert m["top1"] == 1.0 and m["map"] == 1.0 and m["queries"] == 4
    m = retrieval_metrics(emb, ["a", "b", "a", "b", "c"])
    assert m["top1"] == 0.0
    m = retrieval_metrics(emb, ["a", "a", "b", "b", "c"], queries=[2, 4])  # a subset of queries, same gallery
    assert m["top1"] == 1.0 and m["queries"] == 1


def test_tiny_run_learns_writes_and_reloads(tiny_catalogue, trained):
    out = trained.parent
    paths = {"timbre": trained}
    assert trained.name == "timbre.pt"
    ckpt = read_checkpoint(paths["timbre"])
    assert ckpt["kind"] == "timbre" and ckpt["config"]["channels"] == 16
    assert ckpt["train"]["command"] == "pytest" and ckpt["train"]["epochs"] == 3
    assert ckpt["data"]["n_songs"] == 12 and ckpt["data"]["n_singers"] == 4 and len(ckpt["data"]["manifest_sha256"]) == 64
    for key in ("val_loss", "val_singer_top1", "val_singer_map"):
        assert key in ckpt["metrics"]
    assert len(ckpt["metrics"]["history"]) == 3

    # the trained weights give a lower loss than the same seeded initial weights on fixed training views
    cat = Catalogue.open(tiny_catalogue)
    waves, _ = load_waves(cat.songs["path"].tolist(), sr=16000, progress=False)
    bank = SongBank(waves, pd.factorize(cat.songs["singer"])[0], cfg=TINY)
    mels, groups = sample_views(bank, np.arange(12), TINY, rng=np.random.default_rng(5),
                                gen=torch.Generator().manual_seed(5), chain=False)
    torch.manual_seed(0)
    initial = TimbreNet(TINY).eval()
    enc = load_encoder(paths["timbre"])
    with torch.no_grad():
        before = nt_xent(initial.project(mels), groups, TINY.temperature)
        after = nt_xent(enc.model.project(mels), groups, TINY.temperature)
    assert after < before - 0.02

    # reloading gives exactly the final weights' embeddings
    state = torch.load(out / "timbre.state.pt", weights_only=True)
    model = TimbreNet(TINY)
    model.load_state_dict(state["model"])
    direct = TimbreEncoder(model).embed_waveforms(waves[:3])
    assert np.array_equal(enc.embed_waveforms(waves[:3]), direct)
    assert np.array_equal(load_encoder(paths["timbre"]).embed_waveforms(waves[:3]), direct)


def test_resume_continues_from_the_saved_epoch(tiny_catalogue, trained, tmp_path, monkeypatch):
    import encoders.train as train_module

    real_epoch = train_module.train_epoch

    def interrupted(*args, epoch, **kw):
        if epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C during the third epoch
        return real_epoch(*args, epoch=epoch, **kw)

    monkeypatch.setattr(train_module, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_catalogue, tmp_path / "resumed")
    monkeypatch.setattr(train_module, "train_epoch", real_epoch)
    state = torch.load(tmp_path / "resumed" / "timbre.state.pt", weights_only=True)
    assert state["epoch"] == 2 and not (tmp_path / "resumed" / "timbre.pt").exists()
    assert len(list((tmp_path / "resumed").glob("timbre.bank-*.pt"))) == 1  # audio + variants cached for resuming
    resumed = _run(tiny_catalogue, tmp_path / "resumed")["timbre"]
    a, b = read_checkpoint(trained), read_checkpoint(resumed)
    assert b["train"]["epochs"] == 3 and len(b["metrics"]["history"]) == 3
    assert a["metrics"]["history"][0]["train_loss"] == pytest.approx(b["metrics"]["history"][0]["train_loss"])
    for k in a["state_dict"]:  # the resumed run repeats the uninterrupted one
        assert torch.allclose(a["state_dict"][k].float(), b["state_dict"][k].float(), atol=1e-4), k
    # a finished run is not trained again
    mtime = resumed.stat().st_mtime_ns
    assert _run(tiny_catalogue, tmp_path / "resumed", epochs=3)["timbre"] == resumed
    assert resumed.stat().st_mtime_ns == mtime
    # different settings cannot silently continue the old run
    with pytest.raises(SingrecError, match="timbre.state.pt.*pitch"):
        _run(tiny_catalogue, tmp_path / "resumed", epochs=4, pitch="pos")
    # ... unless asked to start over
    _run(tiny_catalogue, tmp_path / "resumed", epochs=1, pitch="none", resume=False)
    assert read_checkpoint(resumed)["config"]["pitch"] == "none"


def test_bad_checkpoints_raise_singrec_error_naming_the_file(trained, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(SingrecError, match="garbage.pt"):
        load_encoder(garbage)
    with pytest.raises(SingrecError, match="missing.pt"):
        load_encoder(tmp_path / "missing.pt")
    good = trained
    ckpt = torch.load(good, weights_only=True)
    ckpt["config"]["channels"] = 32  # weights no longer fit
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(SingrecError, match="mismatch.pt.*does not match"):
        load_encoder(tmp_path / "mismatch.pt")
    ckpt["config"]["no_such_field"] = 1
    torch.save(ckpt, tmp_path / "newer.pt")
    with pytest.raises(SingrecError, match="newer.pt"):
        load_encoder(tmp_path / "newer.pt")
    with pytest.raises(SingrecError, match="expected a melody checkpoint"):
        load_encoder(good, kind="melody")
    other = torch.load(good, weights_only=True)
    other["kind"] = "profile"  # the kinds are timbre and melody
    torch.save(other, tmp_path / "other_kind.pt")
    with pytest.raises(SingrecError, match="other_kind.pt.*unknown encoder kind 'profile'"):
        load_encoder(tmp_path / "other_kind.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(SingrecError, match="truncated.pt"):
        load_encoder(truncated)


def test_unreadable_songs_are_skipped(tiny_catalogue, tmp_path):
    cat_dir = tmp_path / "cat"
    shutil.copytree(tiny_catalogue.parent, cat_dir)
    first = sorted((cat_dir / "audio").rglob("*.flac"))[0]
    first.write_bytes(b"garbage")
    paths = _run(cat_dir, tmp_path / "run", epochs=1, pitch="none")
    data = read_checkpoint(paths["timbre"])["data"]
    assert data["n_failed"] == 1 and first.name in data["failed"][0]
    assert data["n_train_songs"] + data["n_val_songs"] == 11


def test_fine_tuning_starts_from_the_given_weights(tiny_catalogue, trained, tmp_path):
    """--init: training starts from a checkpoint's TDNN (0 epochs: exactly its weights), recorded by sha256."""
    from encoders.checkpoint import file_sha256

    out = _run(tiny_catalogue, tmp_path / "ft", init=trained, epochs=0)["timbre"]
    before, after = read_checkpoint(trained), read_checkpoint(out)
    assert all(torch.equal(before["state_dict"][k], v) for k, v in after["state_dict"].items())
    assert after["train"]["init"]["sha256"] == file_sha256(trained)
    moved = read_checkpoint(_run(tiny_catalogue, tmp_path / "ft1", init=trained, epochs=1)["timbre"])
    assert not all(torch.equal(before["state_dict"][k], v) for k, v in moved["state_dict"].items())
    wide = replace(TINY, channels=24)
    with pytest.raises(SingrecError, match="cannot start from these weights"):
        _run(tiny_catalogue, tmp_path / "bad", init=trained, timbre_config=wide)


def test_an_unknown_encoder_is_refused(tiny_catalogue, tmp_path):
    with pytest.raises(SingrecError, match="encoder must be 'both', 'timbre', 'melody' or 'gender', got 'profile'"):
        _run(tiny_catalogue, tmp_path / "out", encoder="profile")
    assert not (tmp_path / "out").exists()
