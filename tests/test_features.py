"""Feature tables: type inference and overrides, alignment with the id maps, loaders, bad rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.data.features import (
    FeatureEncoder,
    attach_features,
    parse_spec,
    read_features,
    read_ml100k_items,
    read_ml100k_users,
    read_movielens_movies,
)
from recsys.data.interactions import Interactions
from recsys.errors import ConfigError, InputError


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


ITEMS = "item_id,title,genres,year,studio\na,Alpha,action|comedy,1999,big\nb,Beta,drama,,small\nc,Gamma,,2005,big\n"


def test_types_are_inferred_per_column(tmp_path):
    frame = read_features(write(tmp_path, "items.csv", ITEMS), "item")
    assert frame.attrs["kinds"] == {"title": "categorical", "genres": "multi", "year": "numeric", "studio": "categorical"}
    assert frame.loc["a", "genres"] == ("action", "comedy") and frame.loc["c", "genres"] == ()
    assert np.isnan(frame.loc["b", "year"]) and frame.loc["c", "year"] == 2005.0


def test_spec_string_and_toml_override_inference(tmp_path):
    path = write(tmp_path, "items.csv", ITEMS)
    frame = read_features(path, spec="title=skip,year=categorical,studio=multi:i")
    assert list(frame.columns) == ["genres", "year", "studio"]
    assert frame.loc["a", "year"] == "1999" and frame.loc["a", "studio"] == ("b", "g")
    toml = write(tmp_path, "spec.toml", 'id = "title"\n[columns]\nitem_id = "skip"\ngenres = "skip"\n')
    frame = read_features(path, spec=toml)
    assert list(frame.index) == ["Alpha", "Beta", "Gamma"] and "genres" not in frame
    with pytest.raises(ConfigError, match="unknown feature type"):
        parse_spec("year=integer")


@pytest.mark.parametrize(
    ("text", "spec", "where", "message"),
    [
        ("item_id,year\na,1999\nb,19x9\n", "year=numeric", "items.csv:3: column 'year'", "expected a number, got '19x9'"),
        ("item_id,year\na,1999\nb,2000,extra\n", None, "items.csv:3: ", "expected 2 fields"),
        ("item_id,year\na,1999\na,2000\n", None, "items.csv:3: column 'item_id'", "repeats (first on line 2)"),
        ("item_id,year\n,1999\n", None, "items.csv:2: column 'item_id'", "empty id"),
        ("item_id,year\na,1999\n", "colour=categorical", "items.csv:1: ", "the header lacks"),
        ("", None, "items.csv: ", "empty"),
    ],
)
def test_bad_rows_name_file_line_and_column(tmp_path, text, spec, where, message):
    path = write(tmp_path, "items.csv", text)
    with pytest.raises(InputError) as err:
        read_features(path, spec=spec)
    assert str(err.value).startswith(str(tmp_path / where)) and message in str(err.value)


def test_wrong_encoding_names_the_line(tmp_path):
    path = write(tmp_path, "users.csv", "user_id,city\n1,Berlin\n2,Zürich\n", encoding="latin-1")
    with pytest.raises(InputError, match=r"users.csv:3: text is not valid utf-8"):
        read_features(path, "user")
    assert read_features(path, "user", encoding="latin-1").loc["2", "city"] == "Zürich"
    with pytest.raises(InputError, match="no such file"):
        read_features(tmp_path / "nope.csv")


def test_attach_adds_cold_ids_and_aligns_rows(tmp_path):
    data = Interactions.from_arrays(np.array([1, 1, 2]), np.array([10, 20, 20]))
    items = read_features(write(tmp_path, "items.csv", "item_id,genres\n20,x|y\n30,z\n"))
    users = read_features(write(tmp_path, "users.csv", "user_id,age\n2,30\n"), "user")
    out, report = attach_features(data, users, items)
    assert out.items.ids.tolist() == [10, 20, 30] and out.shape == (2, 3) and out.nnz == 3
    assert report.cold == {"user": 0, "item": 1} and report.missing == {"user": 1, "item": 1}
    assert out.item_features["genres"].tolist() == [(), ("x", "y"), ("z",)]
    assert np.isnan(out.user_features["age"][0]) and out.user_features["age"][1] == 30.0
    bad = read_features(write(tmp_path, "bad.csv", "item_id,genres\nm1,x\n"))
    with pytest.raises(InputError, match="not integers"):
        attach_features(data, item_features=bad)


def test_encoder_maps_unknown_and_missing_to_zero_and_round_trips(tmp_path):
    frame = read_features(write(tmp_path, "items.csv", ITEMS), spec="title=skip")
    enc = FeatureEncoder.fit(frame)
    encoded = enc.transform(frame.reset_index(drop=True), 3)
    assert encoded.categorical[:, 0].tolist() == [1, 2, 1]  # studio: big, small, big
    assert encoded.multi[0].tolist() == [[1, 2], [3, 0], [0, 0]]  # action, comedy | drama | none
    assert encoded.numeric[1, 0] == 0.0 and encoded.numeric[0, 0] < 0 < encoded.numeric[2, 0]
    again = FeatureEncoder.from_dict(enc.to_dict())
    assert again == enc
    other = frame.reset_index(drop=True).assign(studio=["huge", None, "big"])
    assert again.transform(other, 3).categorical[:, 0].tolist() == [0, 0, 1]


def test_movielens_loaders(tmp_path):
    flags = "|".join(["0"] * 19)
    on = flags.split("|")
    on[1] = on[5] = "1"  # Action, Comedy
    u_item = f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n2|Amélie (2001)|01-Jan-2001||http://y|{'|'.join(on)}\n"
    items = read_ml100k_items(write(tmp_path, "u.item", u_item, encoding="latin-1"))
    assert items.loc["2", "genres"] == ("Action", "Comedy") and items.loc["1", "genres"] == ()
    assert items.loc["2", "year"] == 2001.0
    users = read_ml100k_users(write(tmp_path, "u.user", "1|24|M|technician|85711\n2|53|F|other|T8H1N\n"))
    assert users.loc["2"].tolist() == [53.0, "F", "other", "T"]
    movies = write(tmp_path, "movies.csv", 'movieId,title,genres\n1,"Heat, The (1995)",Action|Crime\n2,Nothing,(no genres listed)\n')
    tags = write(tmp_path, "tags.csv", "userId,movieId,tag,timestamp\n5,1,Heist,1\n6,1,heist,2\n6,3,noir,3\n")
    frame = read_movielens_movies(movies, tags)
    assert frame.loc["1", "genres"] == ("Action", "Crime") and frame.loc["1", "year"] == 1995.0
    assert frame.loc["2", "genres"] == () and frame.loc["1", "tags"] == ("heist",) and frame.loc["3", "tags"] == ("noir",)
    # Recognised by file name too.
    assert read_features(tmp_path / "u.item").attrs["kinds"] == {"genres": "multi", "year": "numeric"}
    assert read_features(movies).attrs["kinds"] == {"genres": "multi", "year": "numeric"}


def test_a_table_sharing_no_id_with_the_log_is_refused(tmp_path, sample_ratings):
    """Regression (review): users.csv given as the item table added 1000 fake cold items."""
    from recsys.data.io import read_interactions

    data = read_interactions(sample_ratings)
    wrong = read_features(sample_ratings.parent / "users.csv", "item")
    with pytest.raises(InputError, match="none of its 1000 item ids is in the interaction log"):
        attach_features(data, item_features=wrong)


def test_encoder_reads_new_rows_with_its_own_types():
    """Regression (review): new users' tables are typed by guessing; a one-genre-per-row
    column read as text lost its values, and 'abc' in a numeric column passed silently."""
    train = pd.DataFrame({"genres": [("drama", "war"), ("comedy",)], "age": [20.0, 40.0], "country": ["de", "us"]})
    train.attrs["kinds"] = {"genres": "multi", "age": "numeric", "country": "categorical"}
    enc = FeatureEncoder.fit(train)
    new = pd.DataFrame({"genres": ["war", "comedy|drama"], "age": [30.0, None], "country": ["us", "xx"]})
    out = enc.transform(new, 2)
    assert sorted(out.multi[0][0][out.multi[0][0] > 0]) == [enc.multi["genres"].index("war") + 1]
    assert (out.multi[0][1] > 0).sum() == 2
    np.testing.assert_array_equal(out.categorical[:, 0], [enc.categorical["country"].index("us") + 1, 0])
    with pytest.raises(InputError, match="column 'age', row 2: expected a number"):
        enc.transform(pd.DataFrame({"age": ["31", "abc"]}), 2)


@pytest.mark.parametrize("form", ["gzip", "bom"])
def test_feature_tables_read_gzip_and_a_byte_order_mark(tmp_path, sample_ratings, form):
    """Regression (review): the interaction reader took both, the feature reader neither."""
    import gzip

    raw = (sample_ratings.parent / "items.csv").read_bytes()
    path = tmp_path / ("items.csv.gz" if form == "gzip" else "items.csv")
    path.write_bytes(gzip.compress(raw) if form == "gzip" else b"\xef\xbb\xbf" + raw)
    frame = read_features(path, "item", spec="genres=multi")
    assert frame.equals(read_features(sample_ratings.parent / "items.csv", "item", spec="genres=multi"))


def test_an_empty_multi_separator_is_refused():
    """'genres=multi:' was read as '|' silently."""
    from recsys.data.features.spec import parse_spec
    from recsys.errors import ConfigError

    with pytest.raises(ConfigError, match="'multi:' needs a separator"):
        parse_spec("genres=multi:")
    with pytest.raises(ConfigError, match="only multi takes a separator"):
        parse_spec("year=numeric:|")
    assert parse_spec("genres=multi").columns["genres"].sep == "|"
    assert parse_spec("genres=multi:comma").columns["genres"].sep == ","
