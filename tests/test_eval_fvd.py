"""FVD: the Frechet distance against closed forms, the float64 statistics, both I3D loaders (a random
InceptionI3d saved as a state dict; `save_i3d_torchscript_standin`, a scripted module with the TorchScript
I3D's call signature: the real files cannot be downloaded here), the central-16 selection of real clips and the frame preparation."""
from __future__ import annotations

import av
import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn as nn

from model.data import ClipTooShort
from model.eval.frames import resize_frames
from model.eval.frechet import FeatureStats, frechet_distance
from model.eval.fvd import i3d_stats, real_stats
from model.eval.i3d import I3DDetector, InceptionI3d, detector_kind
from model.eval.run import read_clip_file
from tests.model_builders import save_i3d_torchscript_standin


def random_rotation(dim: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def test_frechet_distance_equals_the_closed_form_of_two_gaussians():
    """Covariances sharing an eigenbasis Q: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(0)
    dim = 50
    q = random_rotation(dim, rng)
    a, b = rng.uniform(0.1, 4.0, dim), rng.uniform(0.1, 4.0, dim)
    mu_1, mu_2 = rng.standard_normal(dim), rng.standard_normal(dim)
    expected = np.sum((mu_1 - mu_2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu_1, (q * a) @ q.T, mu_2, (q * b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)
    # identical Gaussians are at distance 0; a pure mean shift costs exactly its squared length
    assert frechet_distance(mu_1, (q * a) @ q.T, mu_1, (q * a) @ q.T) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu_1, np.eye(dim), mu_1 + 3.0, np.eye(dim)) == pytest.approx(9.0 * dim)


def test_frechet_distance_of_random_features_equals_a_direct_sqrtm_computation():
    """Non-commuting covariances of real feature sets: the eigen route equals scipy's matrix square root."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 40)) @ rng.standard_normal((40, 40))
    y = rng.standard_normal((250, 40)) @ rng.standard_normal((40, 40)) + 0.5
    mu_x, mu_y, s_x, s_y = x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    direct = np.sum((mu_x - mu_y) ** 2) + np.trace(s_x + s_y - 2 * scipy.linalg.sqrtm(s_x @ s_y).real)
    assert frechet_distance(mu_x, s_x, mu_y, s_y) == pytest.approx(direct, rel=1e-8)


def test_feature_stats_accumulate_in_batches_to_numpy_mean_and_covariance(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((101, 7)).astype(np.float32) * 30 + 100
    stats = FeatureStats(7)
    for part in np.array_split(x, 5):
        stats.add(part)
    assert stats.count == 101 and stats.total.dtype == np.float64
    np.testing.assert_allclose(stats.mean, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-9)
    stats.save(tmp_path / "s.npz", shards="a b", policy="full")
    loaded, meta = FeatureStats.load(tmp_path / "s.npz")
    assert loaded.count == 101 and meta == {"shards": "a b", "policy": "full"}
    np.testing.assert_array_equal(loaded.cov, stats.cov)
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        stats.add(np.zeros((3, 6)))


# ------------------------------------------------------------------------------------------- detectors

@pytest.fixture(scope="module")
def scripted_i3d(tmp_path_factory):
    return save_i3d_torchscript_standin(tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt")


def test_torchscript_detector_is_called_as_stylegan_v_calls_it(scripted_i3d):
    detector = I3DDetector(scripted_i3d)
    assert detector.kind == "torchscript"
    clips = torch.full((2, 16, 224, 224, 3), 255, dtype=torch.uint8)  # (B, T, H, W, C)
    features = detector.features(clips)
    assert features.shape == (2, 400) and features.dtype == np.float64
    # uint8 in, rescaled by the module (255 -> 1.0), BCTHW layout (3 channels, 16 frames), raw features
    np.testing.assert_allclose(features[:, :3], [[1.0, 3.0, 16.0]] * 2)


def test_inception_i3d_state_dict_loads_through_the_real_path(tmp_path):
    torch.manual_seed(0)
    model = InceptionI3d().eval()
    for module in model.modules():  # trained-looking BN statistics, so loading them matters
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    state = model.state_dict()
    # the piergiaj/pytorch-i3d (VideoGPT i3d_pretrained_400.pt) layer names
    for name in ("Conv3d_1a_7x7.conv3d.weight", "Conv3d_2c_3x3.bn.running_var", "Mixed_4f.b1b.conv3d.weight",
                 "Mixed_5c.b3b.bn.bias", "logits.conv3d.weight", "logits.conv3d.bias"):
        assert name in state
    assert sum(p.numel() for p in model.parameters()) == 12_697_264
    path = tmp_path / "i3d_pretrained_400.pt"
    torch.save(state, path)
    assert detector_kind(path) == "inception_i3d"
    detector = I3DDetector(path)
    clip = torch.randint(0, 256, (1, 16, 224, 224, 3), dtype=torch.uint8)
    with torch.no_grad():
        expected = model(clip.permute(0, 4, 1, 2, 3).float() / 127.5 - 1).double().numpy()
    np.testing.assert_allclose(detector.features(clip), expected, rtol=1e-5, atol=1e-6)

    del state["Mixed_3b.b0.conv3d.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="Mixed_3b.b0.conv3d.weight"):
        I3DDetector(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError, match="--i3d"):
        I3DDetector(tmp_path / "missing.pt")


def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_noise(scripted_i3d):
    detector = I3DDetector(scripted_i3d)
    rng = np.random.default_rng(3)
    base = rng.integers(40, 216, (6, 16, 224, 224, 3)).astype(np.float32)  # already 224: no resize cost
    noise = rng.standard_normal(base.shape, np.float32)
    reference = i3d_stats(detector, list(base.astype(np.uint8)), "full")
    values = []
    for sigma in (0, 12, 48):
        noisy = np.clip(base + sigma * noise, 0, 255).astype(np.uint8)
        values.append(reference.distance(i3d_stats(detector, list(noisy), "full", batch_size=5)))
    assert abs(values[0]) < 1e-6 * max(values[1:])
    assert values[0] < values[1] < values[2]


def test_real_statistics_are_cached_with_their_provenance(scripted_i3d, tmp_path):
    detector = I3DDetector(scripted_i3d)
    clips = [np.full((16, 36, 64, 3), v, np.uint8) for v in (10, 90, 170, 250)]
    stats, info = real_stats(["a.tar", "b.tar"], iter(clips), detector, "sha", "full", 3, tmp_path)
    assert not info["cached"] and stats.count == 3 and info["clips"] == "3"
    never = iter(())  # a cache hit must not read a single real clip
    again, info2 = real_stats(["a.tar", "b.tar"], never, detector, "sha", "full", 3, tmp_path)
    assert info2["cached"] and info2["shards"] == '["a.tar", "b.tar"]' and info2["resize"] == "full"
    np.testing.assert_array_equal(again.cov, stats.cov)
    _, other = real_stats(["a.tar", "b.tar"], iter(clips), detector, "sha", "center-crop", 3, tmp_path)
    assert not other["cached"]  # another policy is another cache entry


# ---------------------------------------------------------------------------------------------- frames

def write_numbered_clip(path, frames: int, size=(64, 36)):
    """An H.264 clip whose frame n is uniformly gray at level 8 * n + 20 (lossless, so it decodes back)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv444p"
        for n in range(frames):
            image = np.full((size[1], size[0], 3), 8 * n + 20, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())


def test_central_16_frames_of_a_frame_numbered_clip(tmp_path):
    write_numbered_clip(tmp_path / "c.mp4", 25)
    frames = read_clip_file(tmp_path / "c.mp4")
    numbers = np.round((frames.reshape(16, -1).mean(1) - 20) / 8).astype(int)
    assert numbers.tolist() == list(range(4, 20))  # (25 - 16) // 2 = 4 .. 19
    write_numbered_clip(tmp_path / "g.mp4", 16)
    numbers = np.round((read_clip_file(tmp_path / "g.mp4").reshape(16, -1).mean(1) - 20) / 8)
    assert numbers.tolist() == list(range(16))  # a generated 16-frame clip: all of it


def test_a_clip_shorter_than_16_frames_is_rejected_naming_it(tmp_path):
    write_numbered_clip(tmp_path / "short.mp4", 10)
    with pytest.raises(ClipTooShort, match=r"short\.mp4.*10 frames < 16"):
        read_clip_file(tmp_path / "short.mp4")


def test_real_clips_under_16_frames_are_left_out_of_fvd_and_counted(scripted_i3d, tmp_path):
    import json
    import tarfile

    from hdvg.cli import main as hdvg

    with tarfile.open(tmp_path / "real-000000.tar", "w") as tar:
        for key, frames in (("clip0", 20), ("clip1", 10), ("clip2", 18)):
            write_numbered_clip(tmp_path / f"{key}.mp4", frames)
            tar.add(tmp_path / f"{key}.mp4", arcname=f"{key}.mp4")
    (tmp_path / "generated").mkdir()
    for key in ("a", "b"):
        write_numbered_clip(tmp_path / "generated" / f"{key}.mp4", 16)
    args = ["eval", "--videos", str(tmp_path / "generated"), "--real", str(tmp_path / "real-000000.tar"),
            "--i3d", str(scripted_i3d), "--metrics", "fvd", "--real-count", "5",
            "--stats-cache", str(tmp_path / "cache")]
    for run in ("first", "cached"):
        assert hdvg(args + ["--output", str(tmp_path / run)]) == 0
        (fvd,) = json.loads((tmp_path / run / "report.json").read_text())["metrics"]
        assert fvd["real_clips"] == 2 and fvd["real_short_clips_left_out"] == 1 and fvd["generated_clips"] == 2
        assert fvd["real_stats"]["cached"] == (run == "cached")


def test_resize_policies_on_a_16_9_frame():
    frame = np.zeros((1, 180, 320, 3), np.uint8)
    frame[:, :, :40] = 255  # a white band on the left, outside the central square
    full, crop = resize_frames(frame, 224, "full"), resize_frames(frame, 224, "center-crop")
    assert full.shape == crop.shape == (1, 224, 224, 3) and full.dtype == torch.uint8
    assert full[0, :, :20].float().mean() > 250  # squeezed: the band stays, 28 columns wide
    assert crop.max() == 0  # cropped: the band is cut off
    with pytest.raises(ValueError, match="resize policy"):
        resize_frames(frame, 224, "stretch")
