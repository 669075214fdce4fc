"""Re-execute teaching notebooks in place, top to bottom, the way they are committed.

    .venv/bin/python scripts/execute_notebooks.py                 # every notebooks/0*.ipynb
    .venv/bin/python scripts/execute_notebooks.py notebooks/03_hypercorrelation.ipynb

Runs each notebook on the ``python3`` kernel from the ``notebooks/`` folder and saves it with
its outputs but WITHOUT widget state (``metadata.widgets``), so GitHub renders it and nbval
(``make test``) compares the same outputs the notebook shows. Prints the run time of each.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(path: Path, timeout: int = 1200) -> float:
    """Execute ``path`` in place; returns the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/0*.ipynb")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOKS.glob("0*.ipynb"))
    for path in paths:
        print(f"{path.name}: {execute(path):.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
