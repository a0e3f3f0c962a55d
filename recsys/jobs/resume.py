"""A checkpoint turned into the settings of the run it continues, once, before anything runs.

A checkpoint stores its run's settings (data and test paths, the config, the read options,
the output, the feature tables): :func:`stored_settings` writes them, :func:`resumed`
reads them back for ``train(resume=DIR)``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.checkpoint import read_checkpoint_meta
from recsys.data.interactions import Interactions
from recsys.errors import ConfigError
from recsys.jobs.settings import DataSource, FeatureTables, ReadOptions, TrainConfig


@dataclass(frozen=True)
class Resumed:
    """The settings of a resumed run."""

    data: DataSource
    config: TrainConfig
    test: DataSource | None
    read_options: ReadOptions | None
    output: str | os.PathLike | None
    checkpoint_every: int
    features: FeatureTables


def stored_settings(
    data: DataSource, test: DataSource | None, config: TrainConfig, read_options: ReadOptions | None,
    output: Path, every: int, features: FeatureTables,
) -> dict[str, Any]:
    """What a checkpoint stores to rebuild the run (paths absolute: a resume may run elsewhere)."""

    def where(source: DataSource | None) -> str | None:
        return None if source is None or isinstance(source, Interactions) else str(Path(source).resolve())

    return {
        "features": features.stored(),
        "data": where(data),
        "test": where(test),
        "config": dataclasses.asdict(config),
        "read_options": None if read_options is None else dataclasses.asdict(read_options),
        "output": str(output.resolve()),
        "every": every,
    }


def resumed(checkpoint: str | os.PathLike, *, data: DataSource | None = None, test: DataSource | None = None,
            output: str | os.PathLike | None = None, checkpoint_every: int = 0,
            features: FeatureTables | None = None, config: TrainConfig | None = None,
            read_options: ReadOptions | None = None) -> Resumed:
    """The settings stored in ``checkpoint``; ``data``, ``test``, ``output``, the checkpoint
    interval and feature tables given here replace the stored ones (files that moved), and
    so do a ``config`` and ``read_options`` (a resumed run may train more or fewer epochs; the
    model itself refuses other hyper-parameters)."""
    run = read_checkpoint_meta(checkpoint).get("run")
    if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
        raise ConfigError(f"{checkpoint}: the checkpoint holds no run settings; call train() with data and config")
    try:
        config = config or TrainConfig.from_dict(run["config"])
        if read_options is None and isinstance(run.get("read_options"), dict):
            read_options = ReadOptions(**run["read_options"])
    except TypeError as exc:
        raise ConfigError(f"{checkpoint}: unreadable run settings ({exc})") from None
    stored = run.get("features") if isinstance(run.get("features"), dict) else {}
    source = data if data is not None else run.get("data")
    if source is None:
        raise ConfigError(f"{checkpoint}: the run was given its data in memory; pass it again")
    return Resumed(
        data=source,
        config=config,
        test=test if test is not None else run.get("test"),
        read_options=read_options,
        output=output if output is not None else run.get("output"),
        checkpoint_every=checkpoint_every or int(run.get("every") or 0),
        features=FeatureTables.from_stored(stored, features or FeatureTables(), checkpoint),
    )
