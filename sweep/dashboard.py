"""A live dashboard of a sweep: `python -m sweep.dashboard <sweep folder> [--storage URL] [--port 8080]`.

Serves optuna-dashboard (an optional extra: pip install -e '.[dashboard]') on the sweep's study storage,
read as it is while the sweep runs: trials, their intermediate eval losses, the pruned ones, parameter
importances. The same as `optuna-dashboard sqlite:///<sweep folder>/optuna.db`; for a PostgreSQL study pass
its URL with --storage (the password may come from PGPASSWORD). Listens on localhost unless --host says
otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def storage_url(sweep_dir: Path, storage: str | None) -> str:
    """The study storage: --storage, else the sweep folder's SQLite file (refused if missing)."""
    if storage:
        return storage
    database = sweep_dir / "optuna.db"
    if not database.is_file():
        sys.exit(
            f"dashboard: no study database at {database}; give a sweep folder, or --storage for other backends."
        )
    return f"sqlite:///{database.resolve()}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sweep.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (outputs/sweeps/<study_name>)")
    parser.add_argument("--storage", help="Optuna storage URL (default: sqlite:///<sweep_dir>/optuna.db)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        from optuna_dashboard import run_server
    except ImportError:
        sys.exit("dashboard: optuna-dashboard is not installed; pip install -e '.[dashboard]'.")
    url = storage_url(args.sweep_dir, args.storage)
    print(f"Serving {args.sweep_dir} at http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    run_server(url, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
