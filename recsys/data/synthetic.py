"""Seeded synthetic interaction logs with planted structure, and the bundled sample.

Users and items belong to latent clusters (think genres); a user picks items mostly
from their own cluster, each item weighted by a power-law popularity. A model that learns
the clusters beats popularity by a wide margin; popularity alone still gets some hits,
as on real data. Side information carries the clusters too (noisily), for feature-based
models and cold start: some items have features but no interactions at all.

``python -m recsys.data.synthetic --out data/sample`` writes the bundled sample.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.interactions import Interactions
from recsys.seeding import Seed, as_generator

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "animation",
          "thriller", "western", "musical", "crime")
COUNTRIES = ("de", "fr", "jp", "us", "br", "in")


@dataclass
class SyntheticData:
    """A generated log and its side tables, with the planted truth."""

    interactions: pd.DataFrame  # user_id, item_id, rating, timestamp
    users: pd.DataFrame  # user_id, age, country, favorite_genre
    items: pd.DataFrame  # item_id, title, genres ("a|b"), year
    user_cluster: np.ndarray  # (n_users,)
    item_cluster: np.ndarray  # (n_items,)
    cold_items: np.ndarray  # item ids with features but no interactions

    def to_interactions(self) -> Interactions:
        f = self.interactions
        return Interactions.from_arrays(
            f["user_id"].to_numpy(), f["item_id"].to_numpy(), f["rating"].to_numpy(),
            f["timestamp"].to_numpy(), feedback="rating",
        )


def generate(
    n_users: int = 1000,
    n_items: int = 1500,
    n_clusters: int = 12,
    mean_items_per_user: float = 40.0,
    in_cluster: float = 0.9,
    popularity_exponent: float = 0.8,
    cold_item_fraction: float = 0.05,
    feature_noise: float = 0.15,
    seed: Seed = 0,
) -> SyntheticData:
    """Generate a log with ``n_clusters`` planted user/item clusters.

    Each user draws about ``mean_items_per_user`` distinct items (lognormal activity, at
    least 5); a share ``in_cluster`` of the probability mass lies on the user's own
    cluster's items. Item popularity follows a power law (Zipf exponent
    ``popularity_exponent``). Ratings are higher inside the cluster. Features reveal
    clusters with noise ``feature_noise``: an item's first genre is its cluster's genre,
    a user's ``favorite_genre`` is their cluster's genre, each replaced at random with
    that probability.
    """
    if n_clusters > len(GENRES):
        raise ValueError(f"at most {len(GENRES)} clusters")
    rng = as_generator(seed)
    user_cluster = rng.integers(n_clusters, size=n_users)
    item_cluster = rng.integers(n_clusters, size=n_items)
    ranks = rng.permutation(n_items) + 1
    popularity = ranks.astype(np.float64) ** -popularity_exponent
    cold = np.zeros(n_items, dtype=bool)
    cold[rng.choice(n_items, size=int(cold_item_fraction * n_items), replace=False)] = True
    popularity[cold] = 0.0

    # Per-cluster item distributions: in-cluster items share `in_cluster` of the mass.
    log_p = np.full((n_clusters, n_items), -np.inf)
    for c in range(n_clusters):
        inside = (item_cluster == c) & ~cold
        outside = (item_cluster != c) & ~cold
        p = np.zeros(n_items)
        p[inside] = in_cluster * popularity[inside] / popularity[inside].sum()
        p[outside] = (1 - in_cluster) * popularity[outside] / popularity[outside].sum()
        with np.errstate(divide="ignore"):
            log_p[c] = np.log(p)

    sigma = 0.7
    activity = rng.lognormal(np.log(mean_items_per_user) - sigma**2 / 2, sigma, size=n_users)
    n_warm = int((~cold).sum())
    counts = np.clip(np.round(activity), 5, n_warm // 2).astype(np.int64)

    # Sampling without replacement by the Gumbel top-k trick, a block of users at a time.
    users_out, items_out = [], []
    block = max(1, 2_000_000 // max(n_items, 1))
    for start in range(0, n_users, block):
        u = np.arange(start, min(start + block, n_users))
        keys = log_p[user_cluster[u]] + rng.gumbel(size=(len(u), n_items))
        order = np.argsort(-keys, axis=1)
        take = np.arange(n_items)[None, :] < counts[u][:, None]
        users_out.append(np.repeat(u, counts[u]))
        items_out.append(order[take])
    user_idx = np.concatenate(users_out)
    item_idx = np.concatenate(items_out)

    same = user_cluster[user_idx] == item_cluster[item_idx]
    rating = np.clip(np.round(3.0 + 1.2 * same - 0.4 * ~same + rng.normal(0, 0.8, len(user_idx))), 1, 5)
    start_time = 1_704_067_200  # 2024-01-01
    user_start = start_time + rng.integers(0, 180 * 86400, size=n_users)
    gaps = rng.exponential(36 * 3600, size=len(user_idx)).astype(np.int64) + 60
    # Cumulative gaps inside each user's block give increasing times per user.
    csum = np.cumsum(gaps)
    first = np.r_[0, np.cumsum(counts)[:-1]]
    offset = csum - np.repeat(csum[first] - gaps[first], counts)
    timestamp = user_start[user_idx] + offset
    shuffle = rng.permutation(len(user_idx))  # logs are rarely sorted

    user_ids = np.arange(1, n_users + 1)
    item_ids = np.asarray([f"m{i:05d}" for i in range(1, n_items + 1)], dtype=object)
    interactions = pd.DataFrame({
        "user_id": user_ids[user_idx[shuffle]],
        "item_id": item_ids[item_idx[shuffle]],
        "rating": rating[shuffle].astype(np.int64),
        "timestamp": timestamp[shuffle],
    })

    def noisy_genre(cluster: np.ndarray) -> np.ndarray:
        flip = rng.random(len(cluster)) < feature_noise
        return np.where(flip, rng.integers(len(GENRES), size=len(cluster)), cluster)

    first_genre = noisy_genre(item_cluster)
    second_genre = rng.integers(len(GENRES), size=n_items)
    genres = [
        GENRES[a] if a == b else f"{GENRES[a]}|{GENRES[b]}"
        for a, b in zip(first_genre, np.where(rng.random(n_items) < 0.5, second_genre, first_genre))
    ]
    items = pd.DataFrame({
        "item_id": item_ids,
        "title": [f"Title {i}" for i in range(1, n_items + 1)],
        "genres": genres,
        "year": rng.integers(1960, 2025, size=n_items),
    })
    users = pd.DataFrame({
        "user_id": user_ids,
        "age": np.clip(rng.normal(35, 12, size=n_users).round(), 13, 90).astype(np.int64),
        "country": np.asarray(COUNTRIES, dtype=object)[rng.integers(len(COUNTRIES), size=n_users)],
        "favorite_genre": np.asarray(GENRES, dtype=object)[noisy_genre(user_cluster)],
    })
    return SyntheticData(interactions, users, items, user_cluster, item_cluster, item_ids[cold])


def checkerboard(n_users: int = 60, n_items: int = 40, density: float = 0.5, seed: Seed = 0) -> Interactions:
    """Even users interact only with even items, odd users only with odd items.

    Each user has about ``density`` of their parity's items (at least one), so the answer
    is known exactly: a model that learns ranks the user's own parity on top.
    """
    rng = as_generator(seed)
    user = np.repeat(np.arange(n_users), n_items)
    item = np.tile(np.arange(n_items), n_users)
    keep = (user % 2 == item % 2) & (rng.random(len(user)) < density)
    keep[np.arange(n_users) * n_items + np.arange(n_users) % 2] = True  # no empty user
    return Interactions.from_arrays(user[keep], item[keep])


def latent_factor_log(
    n_users: int = 3000,
    n_items: int = 10_000,
    dim: int = 24,
    items_per_user: int = 10,
    signal: float = 10.0,
    seed: Seed = 0,
) -> Interactions:
    """Implicit feedback from a planted dot-product model with many weak directions.

    Users and items get standard normal vectors in ``dim`` dimensions; each user picks
    ``items_per_user`` distinct items with probability proportional to
    ``exp(signal * u . v / sqrt(dim))`` (Gumbel top-k). Unlike :func:`generate`'s few strong
    clusters, the structure is spread over ``dim`` directions of similar strength, as in
    large sparse catalogues, so a model that keeps only the strongest few does little better
    than popularity. Memory stays at one block of users times the catalogue.
    """
    rng = as_generator(seed)
    user_vectors = rng.standard_normal((n_users, dim))
    item_vectors = rng.standard_normal((n_items, dim))
    picks = np.empty((n_users, items_per_user), dtype=np.int64)
    block = max(1, 1_000_000 // n_items)
    for start in range(0, n_users, block):
        rows = slice(start, min(start + block, n_users))
        keys = signal * (user_vectors[rows] @ item_vectors.T) / np.sqrt(dim)
        keys += rng.gumbel(size=keys.shape)
        picks[rows] = np.argpartition(-keys, items_per_user, axis=1)[:, :items_per_user]
    return Interactions.from_arrays(np.repeat(np.arange(n_users), items_per_user), picks.ravel())


def write_sample(out: str | Path, seed: int = 0) -> list[Path]:
    """Write the bundled sample (ratings.csv, users.csv, items.csv) to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = generate(seed=seed)
    paths = [out / "ratings.csv", out / "users.csv", out / "items.csv"]
    for frame, path in zip((data.interactions, data.users, data.items), paths):
        frame.to_csv(path, index=False, lineterminator="\n")
    return paths


def _main() -> None:
    parser = argparse.ArgumentParser(description="Write the bundled synthetic sample.")
    parser.add_argument("--out", default="data/sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_sample(args.out, args.seed):
        print(path)


if __name__ == "__main__":
    _main()
