"""Real-ESRGAN degradations (model/sr/degrade.py): deterministic under a seed, shape and range kept, and each does
what it claims, measured on a real 720p frame."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.sr import degrade as D
from model.sr.config import DegradeOrder, paper
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def frame() -> torch.Tensor:
    """Two 128x128 crops of a real 720p news frame, (2, 3, 128, 128) in [0, 1]."""
    import av

    with av.open(str(shared_file("repo_videos/hdvg_clip/gpAkjSy_8iY.0_0.mp4"))) as c:
        image = next(c.decode(video=0)).to_ndarray(format="rgb24")
    crops = np.stack([image[200:328, 500:628], image[300:428, 700:828]])
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def high_frequency_energy(x: torch.Tensor) -> float:
    """Spectral energy above half the Nyquist frequency (Hann-windowed, so the frame border is no edge)."""
    window = torch.outer(torch.hann_window(x.shape[-2]), torch.hann_window(x.shape[-1]))
    spec = torch.fft.fft2((x - x.mean(dim=(-2, -1), keepdim=True)) * window).abs() ** 2
    fy = torch.fft.fftfreq(x.shape[-2]).view(-1, 1)
    fx = torch.fft.fftfreq(x.shape[-1]).view(1, -1)
    return float(spec[..., (fy ** 2 + fx ** 2).sqrt() > 0.25].sum())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_full_pipeline_deterministic_shape_range(frame):
    cfg = paper().degrade
    hr = frame.repeat(2, 1, 1, 1)  # (4, 3, 128, 128)
    outs = [D.degrade(hr, cfg, gen(seed)) for seed in (3, 3, 4)]
    assert outs[0].shape == (4, 3, 32, 32)
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])
    for out in outs:
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, (out * 255).round() / 255)  # 8-bit levels
    with pytest.raises(ValueError, match="multiples of 4"):
        D.degrade(hr[..., :126], cfg, gen(0))


def test_kernels_deterministic_normalised_and_shaped():
    order = paper().degrade.first
    a, b = D.random_kernels(64, order, 21, gen(1)), D.random_kernels(64, order, 21, gen(1))
    assert a.shape == (64, 21, 21) and torch.equal(a, b)
    assert torch.allclose(a.sum(dim=(1, 2)), torch.ones(64), atol=1e-5)
    shaped = D.random_kernels(64, order.model_copy(update=dict(sinc_prob=0.0)), 21, gen(1))
    assert shaped.min() >= 0 and not torch.equal(shaped, a)  # only sinc kernels have negative lobes
    # a 7-tap kernel has no weight outside its own support once padded to 21
    only7 = order.model_copy(update=dict(kernel_sizes=(7,), sinc_prob=0.0))
    k = D.random_kernels(8, only7, 21, gen(2))
    assert k[:, :7].abs().max() == 0 and k[:, 14:].abs().max() == 0 and k[:, :, :7].abs().max() == 0
    # isotropic kernels are symmetric under transposition; anisotropic ones (sigma_x != sigma_y, rotated) are not
    iso = D.shaped_kernels(torch.tensor([0]), torch.tensor([2.0]), torch.tensor([2.0]), torch.tensor([0.3]),
                           torch.tensor([1.0]), torch.tensor([21]), 21)
    aniso = D.shaped_kernels(torch.tensor([0]), torch.tensor([3.0]), torch.tensor([0.7]), torch.tensor(0.5).view(1),
                             torch.tensor([1.0]), torch.tensor([21]), 21)
    assert torch.allclose(iso, iso.transpose(1, 2), atol=1e-6)
    assert (aniso - aniso.transpose(1, 2)).abs().max() > 1e-3
    # Gaussian variance: the second moment along x of an isotropic kernel is sigma^2
    x = torch.arange(21.0) - 10
    assert float((iso[0].sum(0) * x ** 2).sum()) == pytest.approx(4.0, rel=0.02)


def test_plateau_is_flatter_and_generalised_beta_changes_shape():
    one = dict(sigma_x=torch.tensor([2.0]), sigma_y=torch.tensor([2.0]), theta=torch.zeros(1),
               sizes=torch.tensor([21]), pad_to=21)
    gauss = D.shaped_kernels(torch.tensor([0]), beta=torch.ones(1), **one)[0]
    plateau = D.shaped_kernels(torch.tensor([2]), beta=torch.tensor([2.0]), **one)[0]
    box_like = D.shaped_kernels(torch.tensor([1]), beta=torch.tensor([4.0]), **one)[0]
    # with beta = 1 the generalised Gaussian is the Gaussian
    assert torch.allclose(D.shaped_kernels(torch.tensor([1]), beta=torch.ones(1), **one)[0], gauss, atol=1e-7)
    # beta > 1 flattens the top: the centre holds a smaller share relative to its neighbour at distance 1
    ratio = lambda k: float(k[10, 10] / k[10, 11])
    assert ratio(box_like) < ratio(gauss) and ratio(plateau) < ratio(gauss)


@pytest.mark.parametrize("cutoff", [math.pi / 2, math.pi / 3])
def test_sinc_kernel_has_the_requested_cutoff(cutoff):
    k = D.sinc_kernels(torch.tensor([cutoff]), torch.tensor([21]), 21)[0].double()
    response = torch.fft.fft2(k, s=(256, 256)).abs()
    f = torch.fft.fftfreq(256) * 2 * math.pi  # radians per sample
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2)
    passband, stopband = response[radius < 0.7 * cutoff], response[radius > 1.3 * cutoff]
    assert passband.mean() > 0.9 and passband.min() > 0.75
    assert stopband.mean() < 0.05 and stopband.max() < 0.15


def test_blur_lowers_high_frequency_energy(frame):
    order = paper().degrade.first.model_copy(update=dict(kernel_sizes=(21,), blur_sigma=(2.0, 3.0), sinc_prob=0.0))
    kernels = D.random_kernels(2, order, 21, gen(0))
    blurred = D.blur(frame, kernels)
    assert blurred.shape == frame.shape
    assert high_frequency_energy(blurred) < 0.01 * high_frequency_energy(frame)  # measured: 1.5e-5
    pulse = torch.zeros(2, 21, 21)
    pulse[:, 10, 10] = 1
    assert torch.allclose(D.blur(frame, pulse), frame, atol=1e-6)


def test_lower_jpeg_quality_lowers_psnr(frame):
    scores = [psnr(D.jpeg(frame, torch.full((2,), q)), frame) for q in (95.0, 60.0, 30.0)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] > 35 and scores[2] < scores[0] - 4
    out = D.jpeg(frame, torch.tensor([30.0, 30.0]))
    assert out.shape == frame.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, D.jpeg(frame, torch.tensor([30.0, 30.0])))


def test_gaussian_noise_adds_the_expected_variance():
    flat = torch.full((2, 3, 128, 128), 0.5)
    sigma = torch.tensor([10.0, 25.0], dtype=torch.float64)
    colour = D.add_gaussian_noise(flat, sigma, torch.tensor([False, False]), gen(0)) - flat
    for i, s in enumerate((10.0, 25.0)):
        assert float(colour[i].var()) == pytest.approx((s / 255) ** 2, rel=0.05)
    assert torch.equal(colour, D.add_gaussian_noise(flat, sigma, torch.tensor([False, False]), gen(0)) - flat)
    grey = D.add_gaussian_noise(flat, sigma, torch.tensor([True, False]), gen(0)) - flat
    assert torch.equal(grey[0, 0], grey[0, 1]) and torch.equal(grey[0, 1], grey[0, 2])
    assert not torch.equal(grey[1, 0], grey[1, 1])


def test_poisson_noise_adds_the_expected_variance():
    # 128 grey levels in [0.25, 0.75): v = 128, so Var(noise) = scale^2 * E[img] / v
    levels = (64 + torch.arange(128)) / 255
    img = levels[torch.randint(128, (2, 3, 128, 128), generator=gen(5))]
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64)
    noise = D.add_poisson_noise(img, scale, torch.tensor([False, False]), gen(1)) - img
    for i, s in enumerate((1.0, 2.0)):
        expected = s ** 2 * float(img[i].mean()) / 128
        assert float(noise[i].var()) == pytest.approx(expected, rel=0.08)
    assert torch.equal(noise, D.add_poisson_noise(img, scale, torch.tensor([False, False]), gen(1)) - img)


def test_random_resize_and_noise_keep_range_and_are_seeded(frame):
    down = DegradeOrder(resize_probs=(0.0, 1.0, 0.0), resize_range=(0.5, 1.5))
    up = DegradeOrder(resize_probs=(1.0, 0.0, 0.0), resize_range=(0.5, 1.5))
    keep = DegradeOrder(resize_probs=(0.0, 0.0, 1.0))
    small = D.random_resize(frame, down, (128, 128), gen(0)).shape[-1]
    large = D.random_resize(frame, up, (128, 128), gen(0)).shape[-1]
    assert 64 <= small < 128 < large <= 192
    assert D.random_resize(frame, keep, (128, 128), gen(0)).shape == frame.shape
    assert D.random_resize(frame, down, (128, 128), gen(9)).shape == D.random_resize(frame, down, (128, 128),
                                                                                    gen(9)).shape
    noisy = [D.random_noise(frame, paper().degrade.first, gen(7)) for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1]) and noisy[0].min() >= 0 and noisy[0].max() <= 1
    assert noisy[0].shape == frame.shape and not torch.equal(noisy[0], frame)
