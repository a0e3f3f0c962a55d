"""Reading interaction logs: every supported format, id mapping, combining rules, errors."""

import gzip

import numpy as np
import pandas as pd
import pytest

from recsys.data import Interactions, read_interactions, write_interactions
from recsys.errors import InputError


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def triples(data: Interactions) -> set:
    f = data.to_frame()
    return set(zip(f["user"].tolist(), f["item"].tolist(), f.iloc[:, 2].tolist()))


def test_movielens_u_data_tab_without_header(tmp_path):
    p = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    data = read_interactions(p)
    assert data.feedback == "rating"
    assert data.users.is_integer and data.items.is_integer
    assert triples(data) == {(196, 242, 3.0), (186, 302, 3.0), (22, 377, 1.0)}
    assert sorted(data.timestamps.tolist()) == [878887116, 881250949, 891717742]


def test_movielens_ratings_dat_double_colon(tmp_path):
    p = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    data = read_interactions(p)
    assert (data.n_users, data.n_items, data.nnz) == (2, 2, 3)
    assert triples(data) == {(1, 1193, 5.0), (1, 661, 3.0), (2, 1193, 4.0)}


def test_movielens_latest_ratings_csv(tmp_path):
    p = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n")
    data = read_interactions(p)
    assert triples(data) == {(1, 1, 4.0), (1, 3, 4.5), (2, 1, 0.5)}


def test_lastfm_user_artists_counts_with_padded_fields(tmp_path):
    # The real file pads some fields with spaces; "65  " and "65" are the same artist.
    p = write(tmp_path / "user_artists.dat", "userID\tartistID\tweight\r\n2\t51\t13883\r\n2\t65  \t    170\r\n3\t65\t5\r\n")
    data = read_interactions(p)
    assert data.feedback == "count"
    assert data.items.ids.tolist() == [51, 65]
    assert triples(data) == {(2, 51, 13883.0), (2, 65, 170.0), (3, 65, 5.0)}


def test_parquet_and_gzip_and_roundtrip(tmp_path):
    frame = pd.DataFrame({"user_id": ["a", "b", "a"], "item_id": [10, 20, 20], "weight": [1.0, 2.0, 3.0]})
    frame.to_parquet(tmp_path / "log.parquet")
    from_parquet = read_interactions(tmp_path / "log.parquet")
    gz = tmp_path / "log.csv.gz"
    with gzip.open(gz, "wt") as fh:
        frame.to_csv(fh, index=False)
    from_gzip = read_interactions(gz)
    # A gzip file is recognized by its content, not its name.
    plain_name = tmp_path / "log_gz.csv"
    plain_name.write_bytes(gz.read_bytes())
    assert triples(from_parquet) == triples(from_gzip) == triples(read_interactions(plain_name))
    assert triples(from_parquet) == {("a", 10, 1.0), ("b", 20, 2.0), ("a", 20, 3.0)}
    out = tmp_path / "out.csv"
    write_interactions(from_parquet, out)
    assert triples(read_interactions(out)) == triples(from_parquet)


def test_no_value_column_counts_events(tmp_path):
    p = write(tmp_path / "clicks.csv", "user,item\nu1,i1\nu1,i1\nu1,i2\nu2,i1\n")
    data = read_interactions(p)
    assert data.feedback == "count"
    assert triples(data) == {("u1", "i1", 2.0), ("u1", "i2", 1.0), ("u2", "i1", 1.0)}


def test_repeated_pairs_ratings_keep_latest_counts_sum(tmp_path):
    ratings = write(tmp_path / "r.csv", "user,item,rating,timestamp\n1,1,2,300\n1,1,5,100\n1,1,4,200\n2,1,3,1\n2,1,1,1\n")
    data = read_interactions(ratings)
    # Latest by timestamp wins (time 300 -> 2); equal times keep the last row (-> 1).
    assert triples(data) == {(1, 1, 2.0), (2, 1, 1.0)}
    assert sorted(data.timestamps.tolist()) == [1, 300]
    counts = write(tmp_path / "c.csv", "user,item,weight\n1,1,2\n1,1,5\n")
    assert triples(read_interactions(counts)) == {(1, 1, 7.0)}


def test_bom_crlf_unicode_and_big_ids(tmp_path):
    text = "\ufeffuser_id,item_id,rating\r\nΑλίκη,日本,5\r\n-9223372036854775808,x,1\r\n"
    data = read_interactions(write(tmp_path / "u.csv", text))
    assert set(data.users.ids.tolist()) == {"Αλίκη", "-9223372036854775808"}
    ints = write(tmp_path / "i.csv", "user,item\n9223372036854775807,-5\n-9223372036854775808,1\n")
    data = read_interactions(ints)
    assert data.users.is_integer and data.users.ids.tolist() == [-(2**63), 2**63 - 1]
    assert data.items.ids.tolist() == [-5, 1]


def test_leading_zero_ids_are_kept_as_written(tmp_path):
    data = read_interactions(write(tmp_path / "z.csv", "user,item\n007,1\n7,2\n"))
    assert data.users.ids.tolist() == ["007", "7"]


def test_column_flags_and_detection_of_common_names(tmp_path):
    p = write(tmp_path / "odd.csv", "who;what;stars;when\na;x;4;10\nb;y;2;20\n")
    data = read_interactions(p, user_col="who", item_col="what", rating_col="stars", timestamp_col="when")
    assert triples(data) == {("a", "x", 4.0), ("b", "y", 2.0)}
    p2 = write(tmp_path / "named.csv", "customer_id,product_id,quantity\n1,2,3\n")
    assert read_interactions(p2).feedback == "count"


def test_latin1_needs_encoding_flag(tmp_path):
    p = write(tmp_path / "l1.csv", "user,item\ncafé,1\nb,2\n", encoding="latin-1")
    with pytest.raises(InputError) as err:
        read_interactions(p)
    assert ":2:" in str(err.value) and "latin-1" in str(err.value)
    assert set(read_interactions(p, encoding="latin-1").users.ids.tolist()) == {"café", "b"}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("user,item,rating\n1,2,4\n1,3,abc\n", 3, "expected a number"),
        ("user,item,rating\n1,2,4\n1,3,-1\n", 3, ">= 0"),
        ("user,item,rating\n1,2,4\n1,3,inf\n", 3, "finite"),
        ("user,item,rating\n1,2,4\n1,3,NaN\n", 3, "NaN"),
        ("user,item,rating\n1,2,4\n\n1,3\n", 4, "expected 3 fields"),
        ("user,item,rating\n1,2,4\n,3,4\n", 3, "empty user id"),
    ],
)
def test_bad_rows_name_the_line(tmp_path, text, line, fragment):
    p = write(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as err:
        read_interactions(p)
    message = str(err.value)
    assert message.startswith(f"{p}:{line}:"), message
    assert fragment in message


def test_missing_and_misspelled_columns(tmp_path):
    p = write(tmp_path / "m.csv", "usr,item_id,rating\n1,2,3\n")
    with pytest.raises(InputError, match="no user column"):
        read_interactions(p)
    with pytest.raises(InputError, match="did you mean 'rating'"):
        read_interactions(write(tmp_path / "n.csv", "user,item,rating\n1,2,3\n"), rating_col="ratng")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("", "empty"), ("user,item,rating\n", "no data rows")],
)
def test_empty_and_header_only(tmp_path, content, fragment):
    with pytest.raises(InputError, match=fragment):
        read_interactions(write(tmp_path / "e.csv", content))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_interactions(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a directory"):
        read_interactions(tmp_path)


def test_skip_bad_rows_reports_count(tmp_path):
    p = write(tmp_path / "s.csv", "user,item,rating\n1,2,4\n1,3,abc\n2,2\n3,3,5\n")
    data, report = read_interactions(p, skip_bad_rows=True, return_report=True)
    assert report.skipped == 2
    assert triples(data) == {(1, 2, 4.0), (3, 3, 5.0)}


def test_large_synthetic_csv_loads_vectorized(tmp_path, rng):
    n = 200_000
    frame = pd.DataFrame({"user": rng.integers(0, 5000, n), "item": rng.integers(0, 3000, n), "rating": rng.integers(1, 6, n)})
    frame.to_csv(tmp_path / "big.csv", index=False)
    data = read_interactions(tmp_path / "big.csv")
    dedup = frame.drop_duplicates(["user", "item"], keep="last")
    assert data.nnz == len(dedup)
    got = data.to_frame().set_index(["user", "item"])["rating"]
    want = dedup.set_index(["user", "item"])["rating"].astype(np.float32)
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)
