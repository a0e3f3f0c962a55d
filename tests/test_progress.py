"""recsys.progress: the status line of a stage without steps."""

from __future__ import annotations

import threading
import time

import rich.console

from recsys import progress


class _SlowLive:
    """A spinner whose start takes a while, recording whether it is shown."""

    def __init__(self, starting: threading.Event) -> None:
        self.starting, self.shown, self.started = starting, False, threading.Event()

    def start(self) -> None:
        self.starting.set()
        time.sleep(0.2)  # the stage ends meanwhile
        self.shown = True
        self.started.set()

    def stop(self) -> None:
        self.shown = False


def test_a_stage_ending_while_its_spinner_starts_leaves_no_spinner(monkeypatch):
    """Regression: the timer could start the spinner after the stage had stopped it."""
    starting = threading.Event()
    live = _SlowLive(starting)

    class Terminal:
        is_terminal = True

        def __init__(self, **_):
            pass

        def status(self, _description):
            return live

    monkeypatch.setattr(rich.console, "Console", Terminal)
    monkeypatch.setattr(progress, "STATUS_AFTER_SECONDS", 0.0)
    with progress.status("reading"):
        assert starting.wait(5)  # the timer has fired and is starting the spinner
    assert live.started.wait(5)
    assert not live.shown  # stopped after its start, not before


def test_a_quick_stage_prints_nothing(capsys):
    with progress.status("reading"):
        pass
    assert capsys.readouterr().err == ""
