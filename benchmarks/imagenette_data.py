"""Helper for the Imagenette benchmarks: extract ``../shared/data``'s two archives once into
``<reslab cache>/imagenette2-224sq-full/{train,val}`` (never into the repository).

Not a benchmark itself; imported by ``finetune_imagenette.py`` and ``imagenette_keras_eval.py``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVES = {"val": "imagenette2-224sq-val.tar.gz", "train": "imagenette2-224sq-train.tar.gz"}


def shared_data() -> Path:
    env = os.environ.get("RESLAB_SHARED_DATA")
    for cand in (Path(env) if env else None, ROOT.parent / "shared" / "data"):
        if cand is not None and cand.is_dir():
            return cand
    raise SystemExit("../shared/data not found (set RESLAB_SHARED_DATA)")


def imagenette_root(splits: tuple[str, ...] = ("train", "val")) -> Path:
    """A folder with ``train/`` and/or ``val/`` class folders, extracted on first use."""
    from reslab.files import cache_dir

    root = cache_dir() / "imagenette2-224sq-full"
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        if (root / split).is_dir():
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{split}-", dir=root))
        try:
            with tarfile.open(shared_data() / ARCHIVES[split]) as tar:
                tar.extractall(tmp, filter="data")
            os.replace(tmp / "imagenette2-224sq" / split, root / split)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
