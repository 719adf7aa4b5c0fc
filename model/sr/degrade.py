"""Real-ESRGAN's second-order degradation (Wang et al. 2021, `realesrgan_model.py` `feed_data`), batched on any device.

    HR --blur--> resize --noise--> JPEG                                (first order)
       --blur (p 0.8)--> resize to ~LR --noise-->                      (second order)
       --{resize to LR + sinc, JPEG} in random order--> round to 8 bits --> LR (B, 3, H/4, W/4)

kornia does the filtering (`filters.filter2d`, one kernel per sample) and the JPEG codec
(`enhance.jpeg_codec_differentiable`, one quality per sample); what kornia lacks is here: the random blur kernels
(isotropic / anisotropic Gaussian, generalised Gaussian, plateau, 2-D sinc), resizing with a random mode, and
Gaussian / Poisson noise (colour or grey). Every random draw comes from the caller's `torch.Generator`, so one
seed gives one degradation; the draws happen on the generator's device (use one on the images' device for speed)
and the results move to the images' device.

Per sample: kernels, noise type and strength, grey or colour noise, JPEG quality, final sinc. Per batch (the
tensor must keep one size, as in Real-ESRGAN): resize direction, factor and mode, the second blur, the final order.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d

from model.sr.config import RESIZE_MODES, SCALE, DegradeConfig, DegradeOrder

# ----------------------------------------------------------------------------------------------------------------
# Random draws
# ----------------------------------------------------------------------------------------------------------------


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=g.device, dtype=torch.float64)


def _coin(g: torch.Generator, p: float) -> bool:
    return bool(torch.rand((), generator=g, device=g.device) < p)


def _pick(g: torch.Generator, weights: tuple[float, ...], n: int) -> torch.Tensor:
    w = torch.tensor(weights, dtype=torch.float64, device=g.device)
    return torch.multinomial(w, n, replacement=True, generator=g)


# ----------------------------------------------------------------------------------------------------------------
# Blur kernels, (N, K, K) float32, each summing to 1
# ----------------------------------------------------------------------------------------------------------------


def _grid(size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ax = torch.arange(size, dtype=torch.float64, device=device) - size // 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")  # (K, K): row offset y, column offset x
    return xx, yy


def _crop_and_normalise(kernels: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Zero every tap outside each sample's own k x k support (centred), then normalise to sum 1."""
    xx, yy = _grid(kernels.shape[-1], kernels.device)
    half = (sizes // 2).view(-1, 1, 1)
    inside = (xx.abs() <= half) & (yy.abs() <= half)
    kernels = kernels * inside
    return (kernels / kernels.sum(dim=(1, 2), keepdim=True)).float()


def sinc_kernels(cutoff: torch.Tensor, sizes: torch.Tensor, pad_to: int) -> torch.Tensor:
    """Circular low-pass (2-D sinc) kernels: cutoff (N,) in radians/sample (pi = Nyquist), sizes (N,) odd ->
    (N, pad_to, pad_to). h(r) = w J1(w r) / (2 pi r), h(0) = w^2 / (4 pi): the ideal disc of radius w in frequency,
    truncated to k x k taps."""
    xx, yy = _grid(pad_to, cutoff.device)
    r = torch.sqrt(xx ** 2 + yy ** 2)                      # (K, K)
    w = cutoff.double().view(-1, 1, 1)                     # (N, 1, 1)
    safe_r = torch.where(r > 0, r, torch.ones_like(r))
    h = w * torch.special.bessel_j1(w * safe_r) / (2 * math.pi * safe_r)
    h = torch.where(r > 0, h, w ** 2 / (4 * math.pi))      # (N, K, K)
    return _crop_and_normalise(h, sizes)


def shaped_kernels(family: torch.Tensor, sigma_x: torch.Tensor, sigma_y: torch.Tensor, theta: torch.Tensor,
                   beta: torch.Tensor, sizes: torch.Tensor, pad_to: int) -> torch.Tensor:
    """Gaussian-family kernels, all arguments (N,). With Q = d^T S^-1 d, S the covariance rotated by theta:
    family 0 Gaussian exp(-Q/2), 1 generalised Gaussian exp(-Q^beta/2), 2 plateau 1/(1+Q^beta)."""
    xx, yy = _grid(pad_to, family.device)
    c, s = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    u, v = c * xx + s * yy, -s * xx + c * yy               # offsets in the kernel's principal axes, (N, K, K)
    q = (u / sigma_x.view(-1, 1, 1)) ** 2 + (v / sigma_y.view(-1, 1, 1)) ** 2
    qb = q ** beta.view(-1, 1, 1)
    fam = family.view(-1, 1, 1)
    h = torch.where(fam == 0, torch.exp(-0.5 * q), torch.where(fam == 1, torch.exp(-0.5 * qb), 1 / (1 + qb)))
    return _crop_and_normalise(h, sizes)


_FAMILY = {"iso": 0, "aniso": 0, "generalized_iso": 1, "generalized_aniso": 1, "plateau_iso": 2, "plateau_aniso": 2}


def random_kernels(n: int, order: DegradeOrder, pad_to: int, g: torch.Generator) -> torch.Tensor:
    """Real-ESRGAN's `random_mixed_kernels` or, with `sinc_prob`, a sinc kernel, per sample: (n, pad_to, pad_to)."""
    dev = g.device
    sizes = torch.tensor(order.kernel_sizes, device=dev)[
        torch.randint(len(order.kernel_sizes), (n,), generator=g, device=dev)]
    kind = _pick(g, order.kernel_probs, n)
    family = torch.tensor([_FAMILY[t] for t in order.kernel_types], device=dev)[kind]
    iso = torch.tensor([not t.endswith("aniso") for t in order.kernel_types], device=dev)[kind]
    sigma_x = _uniform(g, n, *order.blur_sigma)
    sigma_y = torch.where(iso, sigma_x, _uniform(g, n, *order.blur_sigma))
    theta = torch.where(iso, torch.zeros_like(sigma_x), _uniform(g, n, -math.pi, math.pi))
    # beta: half the time below 1, half above (Real-ESRGAN); 1 for plain Gaussians
    lo = torch.tensor([1.0, order.betag_range[0], order.betap_range[0]], dtype=torch.float64, device=dev)[family]
    hi = torch.tensor([1.0, order.betag_range[1], order.betap_range[1]], dtype=torch.float64, device=dev)[family]
    below, t = _uniform(g, n, 0, 1) < 0.5, _uniform(g, n, 0, 1)
    beta = torch.where(below, lo + (1 - lo) * t, 1 + (hi - 1) * t)
    shaped = shaped_kernels(family, sigma_x, sigma_y, theta, beta, sizes, pad_to)
    # sinc: cutoff in [pi/3, pi] for kernels under 13 taps, [pi/5, pi] otherwise (Real-ESRGAN's dataset)
    cutoff = torch.where(sizes < 13, _uniform(g, n, math.pi / 3, math.pi), _uniform(g, n, math.pi / 5, math.pi))
    sinc = sinc_kernels(cutoff, sizes, pad_to)
    use_sinc = (_uniform(g, n, 0, 1) < order.sinc_prob).view(-1, 1, 1)
    return torch.where(use_sinc, sinc, shaped)


def final_sinc_kernels(n: int, cfg: DegradeConfig, g: torch.Generator) -> torch.Tensor:
    """The last filter: with `final_sinc_prob` a sinc kernel (cutoff in [pi/3, pi]), else the identity pulse."""
    dev, size = g.device, cfg.max_kernel_size
    sizes = torch.tensor(cfg.second.kernel_sizes, device=dev)[
        torch.randint(len(cfg.second.kernel_sizes), (n,), generator=g, device=dev)]
    sinc = sinc_kernels(_uniform(g, n, math.pi / 3, math.pi), sizes, size)
    pulse = torch.zeros(1, size, size, device=dev)
    pulse[0, size // 2, size // 2] = 1
    use_sinc = (_uniform(g, n, 0, 1) < cfg.final_sinc_prob).view(-1, 1, 1)
    return torch.where(use_sinc, sinc, pulse)


# ----------------------------------------------------------------------------------------------------------------
# The degradations, each (B, 3, H, W) in [0, 1] -> (B, 3, H', W')
# ----------------------------------------------------------------------------------------------------------------


def blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """kornia filter2d with one (K, K) kernel per sample. Reflect padding (as Real-ESRGAN) needs each side longer
    than K // 2; a smaller image (a tiny patch after a strong downscale) is padded by replication."""
    border = "reflect" if min(x.shape[-2:]) > kernels.shape[-1] // 2 else "replicate"
    return filter2d(x, kernels.to(x.device, x.dtype), border_type=border)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    size = (max(1, size[0]), max(1, size[1]))
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False)


def random_resize(x: torch.Tensor, order: DegradeOrder, base: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """Up, down or keep (`resize_probs`), factor uniform in [1, hi] or [lo, 1], applied to `base` (H, W); random
    mode among area / bilinear / bicubic. One draw for the batch."""
    direction = int(_pick(g, order.resize_probs, 1))
    lo, hi = order.resize_range
    factor = [float(_uniform(g, 1, 1.0, hi)), float(_uniform(g, 1, lo, 1.0)), 1.0][direction]
    mode = RESIZE_MODES[int(torch.randint(len(RESIZE_MODES), (1,), generator=g, device=g.device))]
    return resize(x, (int(base[0] * factor), int(base[1] * factor)), mode)


def add_gaussian_noise(x: torch.Tensor, sigma: torch.Tensor, gray: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x + N(0, (sigma/255)^2), sigma (B,) on the 0-255 scale; grey samples (gray (B,) bool) get one noise map for
    all three channels. Clipped to [0, 1]."""
    b, c, h, w = x.shape
    colour = torch.randn(b, c, h, w, generator=g, device=g.device)
    mono = torch.randn(b, 1, h, w, generator=g, device=g.device).expand(b, c, h, w)
    noise = torch.where(gray.view(-1, 1, 1, 1), mono, colour) * (sigma.view(-1, 1, 1, 1) / 255)
    return (x + noise.to(x.device, x.dtype)).clamp(0, 1)


def _poisson_noise(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Shot noise on an 8-bit-rounded image: Poisson(img * v) / v - img, v = 2^ceil(log2(#distinct values)) per
    sample (as scikit-image and Real-ESRGAN)."""
    img = (img * 255).round().clamp(0, 255) / 255
    levels = torch.tensor([len(torch.unique(s)) for s in img], dtype=img.dtype, device=img.device)
    vals = (2 ** torch.ceil(torch.log2(levels))).view(-1, 1, 1, 1)
    rate = (img * vals).to(g.device)
    return torch.poisson(rate, generator=g).to(img.device) / vals - img


def add_poisson_noise(x: torch.Tensor, scale: torch.Tensor, gray: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """x + scale * shot noise, scale (B,); grey samples take the noise of their luma for all channels. Clipped."""
    colour = _poisson_noise(x, g)
    mono = _poisson_noise(rgb_to_grayscale(x), g).expand_as(x)
    noise = torch.where(gray.view(-1, 1, 1, 1).to(x.device), mono, colour)
    return (x + noise * scale.view(-1, 1, 1, 1).to(x.device, x.dtype)).clamp(0, 1)


def random_noise(x: torch.Tensor, order: DegradeOrder, g: torch.Generator) -> torch.Tensor:
    """Per sample: Gaussian (`gaussian_noise_prob`) or Poisson noise, grey with `gray_noise_prob`."""
    b = x.shape[0]
    gaussian = (_uniform(g, b, 0, 1) < order.gaussian_noise_prob).to(x.device)
    gray = _uniform(g, b, 0, 1) < order.gray_noise_prob
    sigma = _uniform(g, b, *order.noise_range)
    scale = _uniform(g, b, *order.poisson_scale_range)
    noisy_g = add_gaussian_noise(x, sigma, gray, g)
    noisy_p = add_poisson_noise(x, scale, gray, g)
    return torch.where(gaussian.view(-1, 1, 1, 1), noisy_g, noisy_p)


def jpeg(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """kornia's batched JPEG encode-decode, quality (B,) in [1, 100]. Input clipped to [0, 1] first (Real-ESRGAN:
    out-of-range values give the codec unpleasant artefacts)."""
    return jpeg_codec_differentiable(x.clamp(0, 1), quality.to(x.device, x.dtype)).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------


def _blur_resize_noise(x: torch.Tensor, order: DegradeOrder, base: tuple[int, int], kernel_size: int,
                       g: torch.Generator) -> torch.Tensor:
    kernels = random_kernels(x.shape[0], order, kernel_size, g)
    if _coin(g, order.blur_prob):
        x = blur(x, kernels)
    x = random_resize(x, order, base, g)
    return random_noise(x, order, g)


@torch.no_grad()
def degrade(hr: torch.Tensor, cfg: DegradeConfig, generator: torch.Generator) -> torch.Tensor:
    """HR (B, 3, H, W) float in [0, 1], H and W multiples of 4 -> LR (B, 3, H/4, W/4) in [0, 1],
    rounded to 8-bit levels. Deterministic for a given generator state."""
    if hr.ndim != 4 or hr.shape[1] != 3:
        raise ValueError(f"degrade: expected (B, 3, H, W) images, got {tuple(hr.shape)}")
    b, _, h, w = hr.shape
    if h % SCALE or w % SCALE:
        raise ValueError(f"degrade: H and W must be multiples of {SCALE}, got {h}x{w}")
    g, k = generator, cfg.max_kernel_size
    lr_size = (h // SCALE, w // SCALE)
    x = hr.float()
    # first order: the resize is relative to the HR size
    x = _blur_resize_noise(x, cfg.first, (h, w), k, g)
    x = jpeg(x, _uniform(g, b, *cfg.first.jpeg_range))
    # second order: the resize is relative to the LR size
    x = _blur_resize_noise(x, cfg.second, lr_size, k, g)
    # [resize to LR + sinc] and JPEG in random order (Real-ESRGAN: other orders give twisted lines)
    sinc = final_sinc_kernels(b, cfg, g)
    quality = _uniform(g, b, *cfg.second.jpeg_range)
    mode = RESIZE_MODES[int(torch.randint(len(RESIZE_MODES), (1,), generator=g, device=g.device))]
    if _coin(g, 0.5):
        x = jpeg(blur(resize(x, lr_size, mode), sinc), quality)
    else:
        x = blur(resize(jpeg(x, quality), lr_size, mode), sinc)
    return (x * 255).round().clamp(0, 255) / 255
