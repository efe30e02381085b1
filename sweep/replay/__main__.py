"""python -m sweep.replay [SOURCES ...] [replay=NAME] [hparams_search=a,b] [replay.KEY=VALUE] [overrides]:
the report printed, replay.json and the plots written (the package docstring, docs/sweeps.md)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sweep.replay.cli import parse_arguments
from sweep.replay.plots import plot
from sweep.replay.report import format_table
from sweep.replay.run import run


def main(argv: list[str] | None = None) -> None:
    sources, specs, settings = parse_arguments(sys.argv[1:] if argv is None else argv)
    result = run(sources, specs, settings)
    for line in format_table(result, settings.budgets):
        print(line)
    name = "+".join(grid.label for grid in result.grids)
    folder = Path(settings.output or Path("outputs/replay") / name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "replay.json").write_text(json.dumps(result.to_json(), indent=1))
    print(f"Wrote {folder / 'replay.json'}")
    for grid in result.grids:
        for path in plot(grid, folder):
            print(f"Wrote {path}")


if __name__ == "__main__":
    main()
