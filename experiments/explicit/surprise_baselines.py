"""Surprise's SVD and SVD++ (defaults, random_state=0) on one train and test file; prints
JSON rows. Run in an environment with ``scikit-surprise`` (not a dependency of recsys):

    /path/to/python experiments/explicit/surprise_baselines.py TRAIN TEST

Reads ML-100K's tab-separated files and the CSV files of ``recsys split`` (a header,
``user,item,rating,...``). RMSE and MAE are Surprise's own (``surprise.accuracy``) over
every test rating; Surprise clips its predictions to the training rating scale.
"""

import json
import sys
import time

import pandas as pd
from surprise import SVD, Dataset, Reader, SVDpp, accuracy


def read(path):
    if path.endswith(".csv"):
        frame = pd.read_csv(path)
    else:
        frame = pd.read_csv(path, sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
    frame = frame.iloc[:, :3]
    frame.columns = ["user", "item", "rating"]
    return frame.astype({"user": str, "item": str, "rating": float})


def main(train_path, test_path):
    train, test = read(train_path), read(test_path)
    reader = Reader(rating_scale=(train.rating.min(), train.rating.max()))
    trainset = Dataset.load_from_df(train, reader).build_full_trainset()
    testset = list(test.itertuples(index=False, name=None))
    rows = []
    for name, algo in (("SVD", SVD(random_state=0)), ("SVD++", SVDpp(random_state=0))):
        start = time.perf_counter()
        algo.fit(trainset)
        seconds = time.perf_counter() - start
        predictions = algo.test(testset)
        rows.append({"candidate": name, "rmse": accuracy.rmse(predictions, verbose=False),
                     "mae": accuracy.mae(predictions, verbose=False), "fit_seconds": seconds,
                     "test_ratings": len(testset)})
    print(json.dumps(rows))


if __name__ == "__main__":
    main(*sys.argv[1:3])
