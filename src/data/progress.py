"""One progress bar over every row a data stage tokenizes (both splits), with rows/s, counted in the worker
processes too. While it is open, datasets' own bars (one per map, split and save) are off: this is the one
place that turns them off for the data stage."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm


class RowProgress:
    """`Tokenizing: 45%|████▌     | 90000/200000 [03:05<03:46, 486 rows/s]`, shown from `start(total)` on;
    `enabled=False` shows nothing (datasets' bars are off all the same)."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None

    def __enter__(self) -> RowProgress:
        from datasets.utils import are_progress_bars_disabled, disable_progress_bars

        self._datasets_bars_were_on = not are_progress_bars_disabled()
        disable_progress_bars()
        return self

    def start(self, total: int) -> None:
        """Show the bar, over `total` rows."""
        self.bar = tqdm(total=total, desc="Tokenizing", unit=" rows", disable=not self.enabled)

    def __exit__(self, *exc) -> None:
        from datasets.utils import enable_progress_bars

        if self.bar is not None:
            self.bar.close()
        if self._datasets_bars_were_on:
            enable_progress_bars()

    @contextlib.contextmanager
    def counter(self, processes: int | None) -> Iterator[Callable[[int], None] | None]:
        """A callable that a map batch calls with its row count: the bar's own `update` in this process, and
        for worker processes (`processes` > 1) the `put` of a queue they can reach, drained into the bar
        by a thread here (datasets itself reports its workers' progress through such a queue)."""
        if not self.enabled:
            yield None
            return
        if not processes:
            yield self.bar.update
            return
        from multiprocess import Manager  # datasets' own multiprocessing library (dill pickling)

        with Manager() as manager:
            queue = manager.Queue()
            drain = threading.Thread(target=self._drain, args=(queue,), daemon=True)
            drain.start()
            try:
                yield queue.put
            finally:
                queue.put(None)
                drain.join()

    def _drain(self, queue) -> None:
        while (rows := queue.get()) is not None:
            self.bar.update(rows)
