"""Fréchet Inception Distance: streamed float64 feature statistics and a stable Fréchet distance.

FID(a, b) = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr sqrtm(S_a S_b), with mu and S the mean and
the unbiased covariance (np.cov's) of the 2048-d pool3 features, as pytorch-fid computes it.

Statistics are streamed through vaecli.stats.moments.LatentMoments: each batch's mean and centred
scatter are merged into running float64 moments (Chan et al.'s pairwise update), so memory stays
one 2048x2048 matrix whatever the count, and no sum of squares large against the variance is ever
subtracted.

The trace term. pytorch-fid takes scipy's sqrtm of the non-symmetric product S_a S_b, drops its
imaginary part, and when the result is not finite adds 1e-6 to both diagonals and tries again.
Here the product is never formed: from Cholesky factors S = W W^T, tr sqrtm(S_a S_b) comes from a
symmetric positive (semi-)definite problem, real and non-negative by construction, and no offset
is ever added. With fewer images than features + 1 a covariance is singular (rank
<= n - 1): it is factored by pivoted Cholesky over its numerical rank, pivots within rounding of
zero being left out, so that rounding noise of order 1e-16 never turns into square roots of order
1e-8 which, summed over 2048 directions, would move the figure; and it is fast, O(D n^2).
"""

from __future__ import annotations

import torch

from ..errors import VaecliError
from ..stats.moments import LatentMoments
from .inception import FEATURE_DIMS

# FID falls as the image count grows (its bias goes as 1/n: Chong & Forsyth, CVPR 2020), so figures
# over different counts do not compare; below 2048 images the covariance cannot even be full rank.
# 5000 is the smallest count FID is commonly reported at (FID-5k).
FEW_IMAGES = 5000


class FidStatistics:
    """Running mean and covariance of Inception features; `update` with images or features.

    `network` (an FIDInceptionV3) turns (B, 3, H, W) images in [0, 1] into features; statistics
    of features computed elsewhere go through `add_features`. The moments are vaecli.stats'
    LatentMoments (one C-vector per sample, here C = 2048 features per image): float64, on the CPU.
    """

    def __init__(self, network: torch.nn.Module | None = None, dims: int = FEATURE_DIMS):
        self.network = network
        self.dims = dims
        self.moments = LatentMoments.empty(dims)

    @property
    def count(self) -> int:
        """Images seen."""
        return self.moments.count

    @torch.no_grad()
    def update(self, images_0_1: torch.Tensor) -> None:
        """Add a batch of (B, 3, H, W) images in [0, 1] (one size per batch; each is resized to 299)."""
        if self.network is None:
            raise ValueError("FidStatistics.update needs the Inception network; pass it, or use add_features")
        self.add_features(self.network(images_0_1))

    @torch.no_grad()
    def add_features(self, features: torch.Tensor) -> None:
        """Merge a (B, D) batch of features into the running moments."""
        self.moments.add_samples(features)

    @property
    def mean(self) -> torch.Tensor:
        """(D,) float64 feature mean."""
        self._require(1)
        return self.moments.mean

    @property
    def covariance(self) -> torch.Tensor:
        """(D, D) float64 unbiased covariance (divided by n - 1, as np.cov)."""
        self._require(2)
        return self.moments.covariance

    def _require(self, n: int) -> None:
        if self.count < n:  # a user's cause (rFID of a single image): a one-line VaecliError
            raise VaecliError(f"rFID needs at least {n} image{'s' if n > 1 else ''}, got {self.count}")


def _pivoted_cholesky(cov: torch.Tensor, tol: float) -> torch.Tensor:
    """(D, k) factor W with W W^T = cov over its numerical rank k: LAPACK pstrf's outer-product
    algorithm, taking the largest remaining diagonal as the next pivot and stopping when it is
    within rounding of zero. O(D k^2): cheap for the low-rank covariance of few images."""
    d = cov.shape[0]
    w = cov.new_zeros(d, d)
    residual = cov.diagonal().clone()  # (D,): the diagonal of cov - W W^T so far
    for k in range(d):
        i = int(torch.argmax(residual))
        pivot = residual[i]
        if pivot <= tol:
            return w[:, :k]
        w[:, k] = (cov[:, i] - w[:, :k] @ w[i, :k]) / pivot.sqrt()
        residual -= w[:, k].square()
        residual[i] = 0  # exactly factored (sqrt(p)^2 may differ from p in the last bit)
    return w


def _root_factor(cov: torch.Tensor) -> torch.Tensor:
    """A (D, k) factor W with W W^T = cov: plain Cholesky (k = D) when cov is numerically
    positive definite, else pivoted Cholesky over its numerical rank.

    "Within rounding of zero" is pstrf's default tolerance, D * eps * max(diag): a Cholesky that
    succeeds on a singular covariance only because rounding left its last pivots at 1e-16 would
    otherwise carry square roots of noise, 1e-8 each, into every later step.
    """
    tol = cov.shape[0] * torch.finfo(cov.dtype).eps * cov.diagonal().max().item()
    chol, info = torch.linalg.cholesky_ex(cov)
    if info.item() == 0 and chol.diagonal().square().min().item() > tol:
        return chol
    return _pivoted_cholesky(cov, tol)


def trace_sqrt_product(cov_a: torch.Tensor, cov_b: torch.Tensor) -> torch.Tensor:
    """tr sqrtm(cov_a @ cov_b) for two covariances, without forming the non-symmetric product.

    With factors cov = W W^T (k columns, the numerical rank), the non-zero eigenvalues of
    cov_a cov_b are those of the symmetric W_a^T cov_b W_a, and the squared singular values of
    W_a^T W_b. When one covariance has full rank, the other's factor gives a (k, k) positive
    definite matrix whose eigenvalues are taken (an eigensolve is several times faster than an
    SVD). When both are singular that matrix has a null space of its own, and square roots of its
    rounding noise would be summed; the singular values of the (k_a, k_b) W_a^T W_b are summed
    instead, which carry no such noise.
    """
    cov_a, cov_b = (cov_a + cov_a.T) / 2, (cov_b + cov_b.T) / 2  # exact symmetry
    w_a, w_b = _root_factor(cov_a), _root_factor(cov_b)  # (D, k_a), (D, k_b)
    full = cov_a.shape[0]
    if w_b.shape[1] == full or w_a.shape[1] == full:
        w, other = (w_a, cov_b) if w_b.shape[1] == full else (w_b, cov_a)
        inner = w.T @ other @ w  # (k, k), positive definite
        return torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return torch.linalg.svdvals(w_a.T @ w_b).sum()


def frechet_distance(a: FidStatistics, b: FidStatistics) -> float:
    """The Fréchet distance between the Gaussians fitted to two feature sets, in float64."""
    if a.dims != b.dims:
        raise ValueError(f"feature sizes differ: {a.dims} and {b.dims}")
    mu_a, cov_a = a.mean, a.covariance
    mu_b, cov_b = b.mean.to(mu_a.device), b.covariance.to(mu_a.device)
    diff = mu_a - mu_b
    trace = cov_a.trace() + cov_b.trace() - 2 * trace_sqrt_product(cov_a, cov_b)
    return float(diff @ diff + trace)


def sample_note(count: int) -> str:
    """What a reader must know next to an rFID figure: its image count, and its bias when few."""
    note = f"rFID over {count} image{'s' if count != 1 else ''}"
    if count < FEW_IMAGES:
        note += f"; biased upwards below a few thousand images ({FEW_IMAGES}+ advised), compare only figures over equal counts"
    return note


class ReconstructionFid:
    """rFID as a roundtrip streams it: features of each batch of inputs and of their reconstructions.

    Reconstructions are measured as they are saved (rounded to 8 bits, io.images.to_uint8's rounding),
    so the figure is pytorch-fid's over the input folder and the -o folder. Memory: one batch of
    images at 299x299 in the network, and the two running 2048x2048 moments; never the images seen.
    """

    def __init__(self, network: torch.nn.Module):
        self.inputs, self.reconstructions = FidStatistics(network), FidStatistics(network)

    @torch.no_grad()
    def update(self, inputs_0_1: torch.Tensor, reconstructions_0_1: torch.Tensor) -> None:
        """(B, 3, H, W) pairs in [0, 1]. Both sides' features are computed before either is added,
        so a batch that fails (out of memory) leaves the two counts equal."""
        network = self.inputs.network
        features_in = network(inputs_0_1)
        features_out = network(reconstructions_0_1.float().mul(255).clamp_(0, 255).round_().div_(255))
        self.inputs.add_features(features_in)
        self.reconstructions.add_features(features_out)

    def summary(self) -> dict:
        """{"rfid", "rfid_images", "rfid_note"}; rfid is None (null) under 2 images, the note says why."""
        n = self.inputs.count
        value = frechet_distance(self.inputs, self.reconstructions) if n >= 2 else None
        note = sample_note(n) if n >= 2 else f"rFID needs at least 2 images, got {n}"
        return {"rfid": value, "rfid_images": n, "rfid_note": note}
