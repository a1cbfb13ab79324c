"""Timbre encoder: shapes, unit norms, crops, the contrastive loss and the pair policy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.features import log_mel
from encoders.base import Embedder
from encoders.timbre import (SongBank, TimbreConfig, TimbreEncoder, TimbreNet, crop_starts, nt_xent,
                             positive_mask, recording_chain, sample_views, song_crops, view_groups)

SMALL = dict(channels=16, stat_channels=32, emb_dim=24, proj_dim=8, dilations=(1, 2), speaker=False)  # the TDNN alone


def _tone(f0: float, seconds: float, sr: int = 16000, formant: float = 800.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * h * f0 * t) * np.exp(-((h * f0 - formant) / 400.0) ** 2) for h in range(1, 25))
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return TimbreEncoder(TimbreNet(TimbreConfig(**SMALL)))


def test_crop_starts_cover_the_song():
    assert crop_starts(100, 250, 125) == [0]
    assert crop_starts(250, 250, 125) == [0]
    assert crop_starts(600, 250, 125) == [0, 125, 250, 350]
    mel = torch.arange(48 * 600, dtype=torch.float32).reshape(48, 600)
    crops = song_crops(mel, 250, 125)  # (4, 48, 250)
    assert crops.shape == (4, 48, 250)
    assert torch.equal(crops[1], mel[:, 125:375]) and torch.equal(crops[-1], mel[:, 350:])
    short = song_crops(mel[:, :100], 250, 125)  # tiled
    assert short.shape == (1, 48, 250) and torch.equal(short[0, :, 100:200], mel[:, :100])


def test_shapes_and_unit_norms(encoder):
    assert isinstance(encoder, Embedder) and encoder.name == "timbre" and encoder.dim == 24
    x = torch.randn(3, 48, 250)
    emb = encoder.model(x)  # (3, 24)
    assert emb.shape == (3, 24)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    mels = [torch.randn(48, t) for t in (40, 250, 700)]  # shorter than, equal to, longer than a crop
    out = encoder.embed_logmels(mels)
    assert out.shape == (3, 24) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert encoder.embed_logmels([]).shape == (0, 24)
    waves = [_tone(220, 1.0), _tone(330, 6.0)]
    assert np.allclose(encoder.embed_waveforms(waves), encoder.embed_logmels([log_mel(w) for w in waves]), atol=1e-5)


def test_embedding_ignores_gain_and_batching(encoder):
    """Input normalisation inside the model: a log-mel offset (gain) changes nothing; nor does batching."""
    mel = log_mel(_tone(200, 5.0))
    a = encoder.embed_logmels([mel])
    b = encoder.embed_logmels([mel + 1.5])  # +15 dB
    assert np.allclose(a, b, atol=1e-4)
    small_batches = TimbreEncoder(encoder.model, batch_crops=1)
    assert np.allclose(small_batches.embed_logmels([mel]), a, atol=1e-5)


def test_wrong_input_shape_is_rejected(encoder):
    with pytest.raises(ValueError, match="log-mel"):
        encoder.embed_logmels([torch.randn(40, 300)])


def test_nt_xent_lower_for_matched_pairs_than_shuffled():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=1)  # anchors
    zp = torch.nn.functional.normalize(z + 0.1 * torch.randn(16, 32, generator=g), dim=1)  # their positives
    groups = torch.arange(16).repeat(2)  # [anchors, positives]
    matched = nt_xent(torch.cat([z, zp]), groups, 0.1)
    shuffled = nt_xent(torch.cat([z, zp[torch.randperm(16, generator=g)]]), groups, 0.1)
    assert matched < 0.5 * shuffled
    # a hard negative (an extra view with a fresh id) raises the loss of its anchor only via the denominator
    hard = torch.cat([z, zp, z[:1]])  # the first anchor's exact copy, as a negative
    with_neg = nt_xent(hard, torch.cat([groups, torch.tensor([-1])]), 0.1)
    assert with_neg > matched


def test_supcon_with_one_positive_per_row_is_simclr_cross_entropy_and_zero_without_positives():
    """The loss both encoders share (encoders.base.supcon_loss): with one positive per row it is the cross-entropy
    of picking the positive among all other rows (SimCLR); with no positive at all it is 0, not NaN."""
    from encoders.base import supcon_loss

    g = torch.Generator().manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=1).requires_grad_()
    partner = torch.arange(8) ^ 1  # rows (0, 1), (2, 3), ... are pairs
    positives = torch.zeros(8, 8, dtype=torch.bool)
    positives[torch.arange(8), partner] = True
    logits = (z @ z.T / 0.5).masked_fill(torch.eye(8, dtype=torch.bool), float("-inf"))
    expected = torch.nn.functional.cross_entropy(logits, partner)
    torch.testing.assert_close(supcon_loss(z, positives, 0.5), expected)
    none = supcon_loss(z, torch.zeros(8, 8, dtype=torch.bool), 0.5)
    none.backward()  # still part of the graph
    assert none.item() == 0.0 and torch.isfinite(z.grad).all()


def test_pair_policy_puts_transforms_in_the_right_place():
    cfg = TimbreConfig(pitch="neg", stretch="pos")
    groups = view_groups(torch.tensor([5, 7, 9]), cfg)  # B = 3 -> views [anchor, positive, pitch, stretch]
    assert groups.shape == (12,)
    pos = positive_mask(groups)
    B = 3
    for i in range(B):
        anchor, positive, pitched, stretched = i, B + i, 2 * B + i, 3 * B + i
        assert pos[anchor, positive] and pos[positive, anchor]
        assert pos[anchor, stretched] and pos[stretched, positive]  # "pos": one more positive
        assert not pos[anchor, pitched] and not pos[pitched].any()  # "neg": nobody's positive
        assert pos[anchor].sum() == 2
        for j in range(B):
            if j != i:
                assert not pos[anchor, j] and not pos[anchor, B + j] and not pos[anchor, 3 * B + j]
    assert not pos.diagonal().any()
    none = view_groups(torch.tensor([1, 2]), TimbreConfig(pitch="none", stretch="none"))
    assert none.tolist() == [1, 2, 1, 2]
    assert TimbreConfig(pitch="pos", stretch="neg").transforms == [("pitch", "pos"), ("stretch", "neg")]
    with pytest.raises(ValueError):
        TimbreConfig(pitch="maybe")


def test_sample_views_orders_views_and_transforms_the_anchor():
    """Views are [anchor, positive, pitch-shifted anchor, time-stretched anchor]; without the recording
    chain, the pitch view of anchor i is anchor i's crop moved up or down in frequency."""
    f0s = [150.0, 260.0, 400.0]
    cfg = TimbreConfig(pitch="neg", stretch="neg", pitch_semitones=(3.0, 3.0), transform_variants=2)
    bank = SongBank([_tone(f, 6.0, formant=900) for f in f0s], singers=[0, 1, 2], cfg=cfg)
    assert [len(v) for v in bank.variants["pitch"]] == [2, 2, 2]
    rates = [r for song in bank.variants["stretch"] for r, _ in song]
    assert all(0.7 <= r <= 1 / 1.1 or 1.1 <= r <= 1.4 for r in rates)
    rng = np.random.default_rng(0)
    mels, groups = sample_views(bank, np.array([0, 1, 2]), cfg, rng=rng, gen=torch.Generator().manual_seed(0),
                                chain=False)
    assert mels.shape == (12, 48, cfg.crop_frames) and torch.isfinite(mels).all()
    assert groups[:6].tolist() == [0, 1, 2, 0, 1, 2] and (groups[6:] < 0).all()
    spectra = mels.mean(dim=2)  # (12, 48) average log-mel of each view
    spectra = spectra - spectra.mean(dim=1, keepdim=True)
    corr = torch.nn.functional.normalize(spectra, dim=1) @ torch.nn.functional.normalize(spectra, dim=1).T
    for i in range(3):
        anchor, positive, pitched, stretched = i, 3 + i, 6 + i, 9 + i
        assert corr[anchor, positive] > 0.99  # a steady tone: another crop looks the same
        assert corr[anchor, stretched] > 0.98  # time stretch keeps the pitch
        assert corr[anchor, pitched] < corr[anchor, stretched] - 0.01  # pitch shift moves the harmonics
    assert corr[0, 6] > max(corr[1, 6], corr[2, 6])  # the pitch view of song 0 is nearest to anchor 0


def test_recording_chain_changes_spectra_but_keeps_shape_and_sign():
    cfg = TimbreConfig(chain_clean_p=0.0)
    power = torch.rand(6, 48, 100) + 0.01
    out = recording_chain(power, cfg, torch.Generator().manual_seed(0))
    assert out.shape == power.shape and (out >= 0).all() and torch.isfinite(out).all()
    ratio = (out.log10() - power.log10()).mean(dim=2)  # (6, 48) dB/10 change per band
    assert ratio.std(dim=1).min() > 0.05  # an EQ, not only a gain
