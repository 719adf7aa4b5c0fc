"""Frechet distance between two Gaussians, and the float64 feature statistics it is computed from.

    d^2 = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

tr((S_1 S_2)^(1/2)) is computed as TF-GAN does: S_1 S_2 is similar to A = S_1^(1/2) S_2 S_1^(1/2), which is
symmetric positive semi-definite, so the trace is the sum of the square roots of A's eigenvalues. Two
symmetric eigen-decompositions (`numpy.linalg.eigh`), real throughout: no complex `scipy.linalg.sqrtm`
(whose `disp=` argument, still passed by many FVD scripts, SciPy 1.18 removed) and no imaginary residue.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (round-off negatives clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(sigma_1: np.ndarray, sigma_2: np.ndarray) -> float:
    """tr((S_1 S_2)^(1/2)) for covariance matrices S_1, S_2."""
    root = _sqrt_psd(sigma_1)
    inner = root @ sigma_2 @ root
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def frechet_distance(mu_1: np.ndarray, sigma_1: np.ndarray, mu_2: np.ndarray, sigma_2: np.ndarray) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu_1, S_1) and N(mu_2, S_2)."""
    mu_1, mu_2 = np.asarray(mu_1, np.float64), np.asarray(mu_2, np.float64)
    sigma_1, sigma_2 = np.asarray(sigma_1, np.float64), np.asarray(sigma_2, np.float64)
    if mu_1.shape != mu_2.shape or sigma_1.shape != sigma_2.shape or sigma_1.shape != mu_1.shape * 2:
        raise ValueError(f"shape mismatch: means {mu_1.shape} / {mu_2.shape}, covariances "
                         f"{sigma_1.shape} / {sigma_2.shape}")
    mean_term = float(np.sum((mu_1 - mu_2) ** 2))
    return mean_term + float(np.trace(sigma_1) + np.trace(sigma_2)) - 2.0 * trace_sqrt_product(sigma_1, sigma_2)


class FeatureStats:
    """Running sums of features in float64 (count, sum, sum of outer products): batches add in any order,
    and the mean and covariance come out without holding every feature (2048 x 400 is small, 10k x 400 too,
    but a cache file should not depend on it)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.count = 0
        self.total = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, features) -> None:
        x = np.asarray(features, np.float64)  # (N, dim)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be (N, {self.dim}), got {x.shape}")
        self.count += x.shape[0]
        self.total += x.sum(axis=0)
        self.outer += x.T @ x

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.count

    @property
    def cov(self) -> np.ndarray:
        """Unbiased sample covariance (as `numpy.cov`)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        mu = self.mean
        return (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)

    def distance(self, other: "FeatureStats") -> float:
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)

    def save(self, path: Path, **provenance: str) -> None:
        """Write the sums and what they were computed from (strings) as one .npz, atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, count=self.count, total=self.total, outer=self.outer,
                 **{f"meta_{k}": np.asarray(v) for k, v in provenance.items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> tuple["FeatureStats", dict[str, str]]:
        with np.load(path) as data:
            stats = cls(int(data["total"].shape[0]))
            stats.count = int(data["count"])
            stats.total, stats.outer = data["total"], data["outer"]
            meta = {k[5:]: str(data[k]) for k in data.files if k.startswith("meta_")}
        return stats, meta
