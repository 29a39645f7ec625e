"""The stage interface: a callable over a numpy column batch that marks rows instead of dropping them."""

from __future__ import annotations

from abc import ABC, abstractmethod
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from pipelines.core.faults import fault_point
from pipelines.core.rows import add_busy, add_span, batch_to_rows, count_row_stage, is_active, rows_to_batch


class MissingColumnsError(KeyError):
    """A batch reached a stage without the columns the stage declares in `requires`."""


class Stage(ABC):
    """One pipeline stage. Subclasses set `name`, `requires` and `adds`, and implement `process`.

    `requires` maps column -> what it must hold; it is checked on entry. `adds` maps the columns the
    stage creates -> their default, filled for every row (rejected ones too) so blocks share a schema.
    `process` sees only the active (not yet rejected) rows, mutates them in place and must tally
    itself with `pipelines.core.rows.add_count` (or set `row_level = True` and let the base tally).
    """

    name: ClassVar[str]
    requires: ClassVar[Mapping[str, str]] = {}
    adds: ClassVar[Mapping[str, Any]] = {}
    row_level: ClassVar[bool] = False

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [c for c in self.requires if c not in batch]
        if missing:
            raise MissingColumnsError(
                f"stage {self.name!r} needs columns {missing} "
                f"({'; '.join(f'{c}: {self.requires[c]}' for c in missing)}); got {sorted(batch)}"
            )
        fault_point(f"stage.{self.name}")
        rows = batch_to_rows(batch)
        for row in rows:
            for col, default in self.adds.items():
                row.setdefault(col, default)
        active = [r for r in rows if is_active(r)]
        if not active:
            return rows_to_batch(rows)
        t0, wall0 = time.perf_counter(), time.time()
        self.process(active)
        share = (time.perf_counter() - t0) / len(active)
        wall1 = time.time()
        for r in active:
            if self.row_level:
                count_row_stage(r, self.name)
            add_busy(r, self.name, share)
            add_span(r, self.name, wall0, wall1)
        return rows_to_batch(rows)

    @abstractmethod
    def process(self, rows: list[dict[str, Any]]) -> None:
        """Mutate the active rows of one batch in place."""
