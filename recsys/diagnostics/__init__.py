"""Look at a model's embeddings: 2D maps, clusters and outliers, and a label audit.

- :func:`embedding_map` (then ``.save("map.png" | "map.html")``): projected factors.
- :func:`cluster_items`: k-means clusters with sizes, popular items, dominant metadata,
  and outliers.
- :func:`label_audit`: items whose neighbours carry a different category.
- :func:`write_diagnostics`: the map PNG and the cluster summary into a directory (for
  run artifacts).
- :func:`read_item_features` and :func:`align_items`: an item table lined up with a model.
"""

from __future__ import annotations

from recsys.diagnostics.clusters import ClusterReport, cluster_items, label_audit
from recsys.diagnostics.maps import EmbeddingMap, embedding_map, project, subsample
from recsys.diagnostics.metadata import align_items, read_item_features
from recsys.diagnostics.report import load_item_features, write_diagnostics

__all__ = [
    "ClusterReport",
    "EmbeddingMap",
    "align_items",
    "cluster_items",
    "embedding_map",
    "label_audit",
    "load_item_features",
    "project",
    "read_item_features",
    "subsample",
    "write_diagnostics",
]
