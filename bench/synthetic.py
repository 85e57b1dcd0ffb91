"""Synthetic CLIP-like vectors for benchmarking ANN indexes without real image embeddings.

Real CLIP image embeddings cannot be computed on this machine, so the index benchmark indexes
synthetic *image* vectors and queries them with *real* CLIP ViT-B/32 *text* vectors (the 1000
prompt-ensembled ImageNet class vectors in ../shared/data/clip-vitb32-imagenet-zeroshot). Text to
image search is the product's main use, and text queries are "out of distribution" for an index of
image vectors (the modality gap), which is the harder and realistic case for graph indexes.

What is known about CLIP ViT-B/32 embeddings and how the generator matches it
--------------------------------------------------------------------------
measured on the 1000 real text vectors (`python bench/synthetic.py` prints these again):
  * unit norm; a narrow cone: the mean vector has norm 0.79, mean pairwise cosine 0.63;
  * anisotropic: two coordinates (133, 312) carry a mean of about +-0.5 each, all other
    coordinates have std ~0.027; the centred PCA spectrum falls as a power law ~ i^-0.9
    (31 components hold 50% of the variance, 171 hold 90%, participation ratio 56);
  * clustered: the nearest other class vector has cosine 0.85 on average.
from the literature (assumptions, not measured here):
  * image embeddings form their own cone, separated from the text cone ("modality gap",
    Liang et al., NeurIPS 2022); the mean pairwise cosine of unrelated images is about 0.5;
  * a matching image-text pair has cosine ~0.3, an unrelated pair ~0.18 (why CLIPScore rescales
    by 2.5); ViT-B/32 zero-shot ImageNet top-1 accuracy with prompt ensembling is 63%.
  * personal photo collections are skewed (many photos of few subjects), grouped in events, and
    full of near-duplicates (bursts).

Generator (image vector of class c, scene s, photo p):
    x = normalise(a * u_img + b * (t_c - mean_t) + c1 * S_s + c2 * P_p)
where u_img is the image-cone axis (cosine GAP_COS with the text-cone axis), t_c the real text
vector of class c, S_s and P_p anisotropic Gaussian vectors with a power-law spectrum i^-0.9 in a
random basis (aligned with the text's class directions they make zero-shot accuracy far too low). Classes are Zipf-distributed, scenes hold ~30 photos, and a fraction of
photos are bursts (a near-copy of the previous photo). `calibration()` prints the resulting
statistics beside the targets above. Without ../shared the text vectors themselves are synthesised
with the same cone and spectrum, so tests still run (the numbers then are less realistic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

REAL_TEXT = Path(__file__).resolve().parents[2] / "shared/data/clip-vitb32-imagenet-zeroshot/zeroshot_weights.npy"
DIM = 512

# Constants chosen so that the statistics printed by calibration() hit the targets in the docstring.
A_CONE = 0.70  # weight of the image-cone axis: mean pairwise cosine of unrelated images ~ A^2
GAP_COS = 0.33  # cosine between the image-cone and text-cone axes: unrelated image-text ~0.18
B_SEM = 0.30  # weight of the class's semantic direction (text residual): matching pair ~ +0.1
G_CLASS = 0.40  # the class's visual look, invisible to text: same-class images ~0.68, others ~0.49
C_SCENE = 0.40  # scene (event) component
C_PHOTO = 0.40  # per-photo component
BURST = 0.2  # fraction of photos that are a near-copy of the previous one
C_BURST = 0.15  # how far a burst copy moves
ZIPF = 0.8  # class frequency ~ rank^-ZIPF
SCENE_SIZE = 30  # mean photos per scene
SPECTRUM = 0.9  # power-law exponent of the anisotropic noise spectrum


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def real_text_vectors(path: Path = REAL_TEXT) -> np.ndarray | None:
    """The 1000 real CLIP ViT-B/32 text vectors (1000, 512) float32 unit norm, or None if absent."""
    try:
        w = np.load(path)
    except OSError:
        return None
    return _normalise(np.ascontiguousarray(w.T, dtype=np.float32))


class _Space:
    """The text vectors, their cone axis and an anisotropic sampler in their PCA basis."""

    def __init__(self, seed: int = 0):
        text = real_text_vectors()
        rng = np.random.default_rng(seed + 7919)
        self.real = text is not None
        if text is None:  # synthesise a text cone with the measured statistics
            basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].T
            lam = np.arange(1, DIM + 1) ** -SPECTRUM
            lam *= 0.38 / lam.sum()  # residual norm^2 ~0.38 as in the real vectors
            mean = np.zeros(DIM, np.float32)
            mean[133], mean[312] = 0.5, -0.5
            mean += rng.standard_normal(DIM).astype(np.float32) * 0.02
            mean *= 0.79 / np.linalg.norm(mean)
            text = mean + (rng.standard_normal((1000, DIM)) * np.sqrt(lam)) @ basis
            text = _normalise(text.astype(np.float32))
        self.text = text
        self.mean_t = text.mean(0)
        # The photo/scene variation is anisotropic with the text spectrum's power law but in its own
        # random basis: variation that is aligned with the text's class directions would make images
        # unrecognisable (zero-shot accuracy 22% instead of CLIP's 63%; see calibration()).
        self.basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].T.astype(np.float32)
        lam = np.arange(1, DIM + 1, dtype=np.float64) ** -SPECTRUM
        self.scale = np.sqrt(lam / lam.sum()).astype(np.float32)  # E|noise|^2 = 1
        axis_t = self.mean_t / np.linalg.norm(self.mean_t)
        w = rng.standard_normal(DIM).astype(np.float32)
        w -= (w @ axis_t) * axis_t
        w /= np.linalg.norm(w)
        self.u_img = (GAP_COS * axis_t + np.sqrt(1 - GAP_COS**2) * w).astype(np.float32)

    def noise(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.standard_normal((n, DIM), dtype=np.float32) * self.scale) @ self.basis


_SPACES: dict[int, _Space] = {}


def _space(seed: int = 0) -> _Space:
    if seed not in _SPACES:
        _SPACES[seed] = _Space(seed)
    return _SPACES[seed]


def text_queries(n: int | None = None, seed: int = 0) -> np.ndarray:
    """Text query vectors: the real CLIP class vectors (first n, or all 1000)."""
    t = _space(0).text
    return t if n is None else t[:n].copy()


def images(n: int, seed: int = 0, chunk: int = 100_000, with_labels: bool = False):
    """n synthetic CLIP-like image vectors (n, 512) float32, unit norm. Deterministic per seed.

    The collection is a sequence of scenes (events) of ~SCENE_SIZE photos; each scene has one
    class drawn from a Zipf law over the 1000 classes.
    """
    sp = _space(0)
    rng = np.random.default_rng(seed)
    n_cls = len(sp.text)
    p = np.arange(1, n_cls + 1, dtype=np.float64) ** -ZIPF
    p /= p.sum()
    cls_of_rank = rng.permutation(n_cls)
    # scene boundaries
    sizes = rng.geometric(1.0 / SCENE_SIZE, size=n // max(1, SCENE_SIZE // 4) + 16)
    scene_of = np.repeat(np.arange(len(sizes)), sizes)[:n]
    while len(scene_of) < n:  # extremely unlikely; keep it correct anyway
        scene_of = np.concatenate([scene_of, np.full(n - len(scene_of), scene_of[-1] + 1)])
    n_scenes = int(scene_of[-1]) + 1
    scene_cls = cls_of_rank[rng.choice(n_cls, size=n_scenes, p=p)]
    scene_vec = sp.noise(rng, n_scenes)
    class_vec = sp.noise(np.random.default_rng(12345), n_cls)  # fixed per class across seeds
    sem = sp.text - sp.mean_t
    out = np.empty((n, DIM), np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        sc = scene_of[lo:hi]
        x = (
            A_CONE * sp.u_img
            + B_SEM * sem[scene_cls[sc]]
            + G_CLASS * class_vec[scene_cls[sc]]
            + C_SCENE * scene_vec[sc]
            + C_PHOTO * sp.noise(rng, hi - lo)
        )
        # bursts: a near-copy of the previous photo of the same scene
        burst = rng.random(hi - lo) < BURST
        burst[0] = False
        burst[1:] &= sc[1:] == sc[:-1]
        idx = np.flatnonzero(burst)
        if len(idx):
            # chains of bursts copy the first photo of the chain (keeps it vectorised)
            src = idx - 1
            while True:
                again = burst[src]
                if not again.any():
                    break
                src[again] -= 1
            x[idx] = x[src] + C_BURST * sp.noise(rng, len(idx))
        out[lo:hi] = _normalise(x)
    if with_labels:
        return out, scene_cls[scene_of]
    return out


def stats(x: np.ndarray, sample: int = 2000, seed: int = 0) -> dict:
    """Statistics used to compare synthetic vectors with real CLIP ones."""
    rng = np.random.default_rng(seed)
    s = x[rng.choice(len(x), size=min(sample, len(x)), replace=False)]
    g = s @ s.T
    n = len(s)
    off = g[~np.eye(n, dtype=bool)]
    mean = x.mean(0)
    nn = s @ x.T
    top = np.sort(nn, axis=1)[:, -2:]  # the best is the vector itself (cosine 1)
    cen = s - s.mean(0)
    ev = np.linalg.svd(cen, compute_uv=False) ** 2
    ev /= ev.sum()
    cum = np.cumsum(ev)
    return {
        "n": int(len(x)),
        "norm_of_mean": float(np.linalg.norm(mean)),
        "mean_pairwise_cos": float(off.mean()),
        "top1_nn_cos": float(top[:, 0].mean()),
        "pca_50pct": int(np.searchsorted(cum, 0.5) + 1),
        "pca_90pct": int(np.searchsorted(cum, 0.9) + 1),
        "participation_ratio": float(1 / (ev**2).sum()),
    }


def calibration(n: int = 20_120, seed: int = 0) -> dict:
    """Synthetic vs real statistics, and the text-image statistics against the literature targets."""
    sp = _space(0)
    x, lab = images(n, seed=seed, with_labels=True)
    t = sp.text
    s = x[:4000]
    sim = s @ t.T
    match = sim[np.arange(len(s)), lab[:4000]]
    out = {
        "real_text_vectors": sp.real,
        "text": stats(t),
        "images": stats(x),
        "image_text_cos_matching": float(match.mean()),
        "image_text_cos_unrelated": float(sim.mean()),
        "zero_shot_top1": float((sim.argmax(1) == lab[:4000]).mean()),
        "text_query_top1_image_cos": float((t @ x.T).max(1).mean()),
    }
    out.update(_class_structure(x, lab, seed))
    return out


def _class_structure(x: np.ndarray, lab: np.ndarray, seed: int = 0) -> dict:
    """Mean cosine of same-class / different-class image pairs and k-means NMI against classes."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(x), 200_000)
    j = rng.integers(0, len(x), 200_000)
    far = np.abs(i - j) > 200  # mostly not the same scene
    cos = np.einsum("ij,ij->i", x[i], x[j])
    same = (lab[i] == lab[j]) & far
    out = {"same_class_cos": float(cos[same].mean()), "diff_class_cos": float(cos[lab[i] != lab[j]].mean())}
    try:
        import faiss
    except ImportError:
        return out
    k = len(np.unique(lab))
    km = faiss.Kmeans(x.shape[1], k, niter=10, seed=seed, spherical=True, verbose=False)
    km.train(x)
    _, a = km.index.search(x, 1)
    out["kmeans_nmi"] = _nmi(lab, a[:, 0])
    return out


def _nmi(a: np.ndarray, b: np.ndarray) -> float:
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    n = len(a)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= n
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = (joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum()

    def h(p):
        return -(p[p > 0] * np.log(p[p > 0])).sum()

    return float(2 * mi / (h(pa) + h(pb)))


if __name__ == "__main__":
    import json

    print(json.dumps(calibration(), indent=1))
