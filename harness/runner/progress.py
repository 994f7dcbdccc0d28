"""Progress of a run, per stage: pruning blocks, generation requests, scoring batches.

The stages report through a plain callable, ``advance(n)`` (n more units done), and know
nothing of how it is shown; the pruning core and the scorers take it as an optional
``progress`` argument and import no progress library. A ``Progress`` shows the run:

- on a terminal, a bar of cells for the whole run and, below it, a bar for the running stage
  with its count and ETA (tqdm); each stage leaves one summary line when it ends;
- elsewhere (CI, a log file, a notebook capturing stderr), only the summary lines, one per
  stage when it ends, e.g. ``tiny prune: 3 checkpoints, 6 blocks in 3.1 s``, and no
  carriage-return updates.

A stage's total counts all of its units in the plan; units already current are ``skip``ped
(counted as cached, not timed into the rate).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("prunescope")


@dataclass
class Stage:
    """One stage of one model: ``total`` units of ``unit``, of which ``done`` were worked
    and ``skipped`` were already current. ``items`` says what the stage went through
    (e.g. "3 checkpoints"); ``bar`` is its tqdm bar on a terminal."""

    name: str
    unit: str
    total: int
    items: str = ""
    done: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)
    bar: object = None

    def advance(self, n: int = 1) -> None:
        """``n`` more units worked."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def skip(self, n: int) -> None:
        """``n`` units already current: counted, but not as work done at this rate."""
        if n <= 0:
            return
        self.skipped += n
        if self.bar is not None:
            self.bar.initial += n  # tqdm's rate (smoothing 0) is (n - initial) / elapsed
            self.bar.update(n)

    def summary(self, seconds: float) -> str:
        counted = self.done + self.skipped
        count = f"{counted}" if counted == self.total else f"{counted}/{self.total}"
        cached = f" ({self.skipped} cached)" if self.skipped else ""
        items = f"{self.items}, " if self.items else ""
        units = self.unit + ("es" if self.unit.endswith(("ch", "sh", "s", "x")) else "s")
        return f"{self.name}: {items}{count} {units}{cached} in {seconds:.1f} s"


class Progress:
    """The run's progress display (``enabled=False``: nothing is shown, counts still kept).
    ``interactive`` (default: whether ``stream`` is a terminal) chooses bars or lines."""

    def __init__(self, cells: int, desc: str, *, enabled: bool = True, stream=None,
                 interactive: bool | None = None):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.interactive = enabled and (self.stream.isatty() if interactive is None else interactive)
        self.stages: list[Stage] = []  # every stage run so far, in order
        self._cells = self._bar(total=cells, desc=desc, unit="cell") if self.interactive else None

    def cells_done(self, n: int = 1) -> None:
        """``n`` more cells have finished every stage of this run."""
        if self._cells is not None:
            self._cells.update(n)

    @contextmanager
    def stage(self, name: str, unit: str, total: int, items: str = ""):
        """A stage of ``total`` units: yields its ``Stage`` (call ``advance``/``skip``); on
        leaving, its summary line is written."""
        stage = Stage(name, unit, total, items)
        if self.interactive:
            stage.bar = self._bar(total=total, desc=name, unit=unit, leave=False, smoothing=0)
        self.stages.append(stage)
        try:
            yield stage
        finally:
            line = stage.summary(time.perf_counter() - stage.started)
            log.info(line)  # run.log keeps the stage lines too
            if stage.bar is not None:
                stage.bar.close()
                stage.bar.write(line, file=self.stream)
            elif self.enabled:
                print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._cells is not None:
            self._cells.close()

    def _bar(self, **kwargs):
        from tqdm import tqdm

        return tqdm(file=self.stream, dynamic_ncols=True, **kwargs)
