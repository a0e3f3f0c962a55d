"""``recsys evaluate`` as a function: a saved model's metrics on a test file."""

from __future__ import annotations

import os
from collections.abc import Sequence

from recsys.artifacts import check_output
from recsys.errors import ConfigError
from recsys.evaluation.full_ranking import DEFAULT_KS, PER_USER_TABLE, Evaluation, evaluate
from recsys.jobs.record import data_params, log_evaluation
from recsys.jobs.settings import DataSource, ReadOptions, load, source_name
from recsys.jobs.split import write_table
from recsys.models.base import Recommender
from recsys.progress import status
from recsys.runs import NULL_RUN, Run


def evaluate_model(
    model: Recommender | str | os.PathLike,
    test: DataSource,
    *,
    train: DataSource | None = None,
    ks: Sequence[int] = DEFAULT_KS,
    read_options: ReadOptions | None = None,
    per_user: bool | str | os.PathLike = False,
    progress: bool = False,
    retrieval: str = "exact",
    search_k: int | None = None,
    cold_items: bool = False,
    run: Run = NULL_RUN,
    model_source: str | None = None,
) -> Evaluation:
    """Evaluate a model (object or saved directory) on a test file, reporting to ``run``.

    ``retrieval="annoy"`` ranks through the Annoy index saved in the model directory and
    adds ``overlap@k`` with the exact top-k. ``cold_items`` ranks the test's items without
    training interactions among themselves, as ``train`` does after a ``cold-items`` split
    (a model that cannot score them gets empty metrics and a note in ``extra``).
    ``model_source`` is how the caller named the model (an MLflow URI), for the record.
    ``per_user``: True keeps each user's metrics in the result; a path also writes them there
    (CSV or Parquet), over nothing but an earlier per-user table (checked before any work).
    """
    per_user_out = None if isinstance(per_user, bool) else per_user
    if per_user_out is not None:
        check_output(per_user_out, PER_USER_TABLE, inputs=[model, test, train])
    model_dir = None
    if not isinstance(model, Recommender):
        model_dir = model
        with status(f"reading the model {os.fspath(model)}", progress):
            model = Recommender.load(model)
    run.log_params({"model": model.name, "model_source": model_source or (os.fspath(model_dir) if model_dir else None),
                    **model.get_params()})
    run.log_params(data_params(test))
    if train is not None:
        run.log_params(data_params(train, "train"))
    given = {"retrieval": None if retrieval == "exact" else retrieval, "search_k": search_k,
             "cold_items": cold_items or None, "ks": ",".join(map(str, ks))}
    run.log_params({k: v for k, v in given.items() if v is not None})
    evaluation = _evaluate(model, model_dir, test, train, ks, read_options, bool(per_user), progress, retrieval,
                           search_k, cold_items)
    if per_user_out is not None and evaluation.per_user is not None:
        write_table(evaluation.per_user, per_user_out, PER_USER_TABLE)
    log_evaluation(run, evaluation)
    evaluation.extra["run_id"] = run.run_id
    return evaluation


def _evaluate(model: Recommender, model_dir: str | os.PathLike | None, test: DataSource, train: DataSource | None,
              ks: Sequence[int], read_options: ReadOptions | None, per_user: bool, progress: bool, retrieval: str,
              search_k: int | None, cold_items: bool) -> Evaluation:
    with status(f"reading {source_name(test)}", progress):
        test_data = load(test, read_options)
    if cold_items:
        if retrieval != "exact" or train is not None or per_user:
            raise ConfigError("--cold-items ranks the cold items exactly with the model's own training data; "
                              "drop --retrieval, --train and --per-user")
        from recsys.evaluation.cold import evaluate_cold_items

        return evaluate_cold_items(model, test_data, ks=ks, progress=progress)
    train_data = None if train is None else load(train, read_options)
    if retrieval != "exact":
        from recsys.evaluation.approximate import evaluate_with_index
        from recsys.retrieval.batch import open_retrieval

        index = open_retrieval(model, retrieval, model_dir, search_k=search_k)  # type: ignore[arg-type]
        return evaluate_with_index(model, test_data, index, train=train_data, ks=ks, per_user=per_user,
                                   progress=progress)
    return evaluate(model, test_data, train=train_data, ks=ks, per_user=per_user, progress=progress)
