"""Side information: user and item feature tables, typed, aligned with the id maps, encoded.

A feature table has one row per user (or item) id and typed columns:

- ``categorical``: one value per row (``country``, ``occupation``), an embedding each;
- ``multi``: several values split on a separator (``Action|Comedy``), mean of embeddings;
- ``numeric``: a number (``age``, ``year``), standardized;
- ``skip``: ignored (free text such as titles).

Types are inferred from the values and can be overridden by a spec, either a string
(``"genres=multi:|,year=numeric,title=skip"``) or a small TOML file::

    id = "item_id"
    [columns]
    genres = "multi:|"
    year = "numeric"

:func:`read_features` parses a file into a typed frame (index: the ids as text);
:func:`attach_features` aligns such frames with an :class:`Interactions`' vocabularies,
adding ids that have features but no interactions (the cold ones) to the vocabulary;
:class:`FeatureEncoder` turns aligned frames into index arrays for a model and saves as
JSON. Loaders for the MovieLens side files are :func:`read_ml100k_users`,
:func:`read_ml100k_items`, :func:`read_movielens_movies` and :func:`read_movielens_tags`.

The modules: :mod:`~recsys.data.features.spec` (the spec), :mod:`~recsys.data.features.tables`
(reading), :mod:`~recsys.data.features.attach` (aligning), :mod:`~recsys.data.features.encoding`
(encoding for a model).
"""

from recsys.data.features.attach import (
    FeatureReport,
    attach_features,
    rows_with_values,
    with_new_users,
)
from recsys.data.features.encoding import EncodedFeatures, FeatureEncoder
from recsys.data.features.spec import KINDS, ColumnSpec, FeatureSpec, Kind, parse_spec
from recsys.data.features.tables import (
    ML100K_GENRES,
    Side,
    feature_kinds,
    load_features,
    merge_features,
    read_features,
    read_ml100k_items,
    read_ml100k_users,
    read_movielens_movies,
    read_movielens_tags,
)
from recsys.data.text import header_delimiter

__all__ = [
    "KINDS",
    "ML100K_GENRES",
    "ColumnSpec",
    "EncodedFeatures",
    "FeatureEncoder",
    "FeatureReport",
    "FeatureSpec",
    "Kind",
    "Side",
    "attach_features",
    "feature_kinds",
    "header_delimiter",
    "load_features",
    "merge_features",
    "parse_spec",
    "read_features",
    "read_ml100k_items",
    "read_ml100k_users",
    "read_movielens_movies",
    "read_movielens_tags",
    "rows_with_values",
    "with_new_users",
]
