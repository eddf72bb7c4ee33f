"""Turn a finished ``reslab train`` run into weights shipped inside the package.

Loads ``RUN_DIR/model.safetensors``, measures its top-1 on the official test split in fp32
(``reslab eval``'s computation), and writes ``src/reslab/assets/weights/<model>-<data>.safetensors``
(weights + config + class names + recipe + measured accuracy, ≤ 5 MB) plus its manifest entry,
so that ``MODEL@reslab-<data>`` works offline on a fresh install.

    python3 tools/ship_weights.py RUN_DIR --recipe "reslab train --data cifar10 …"
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

ASSETS = Path(__file__).resolve().parents[1] / "src" / "reslab" / "assets" / "weights"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--recipe", required=True, help="the command that produced the run")
    p.add_argument("--hardware", default="2-core Intel Xeon VM, torch 2.14.1 CPU")
    args = p.parse_args()

    import reslab
    from reslab.data import load_dataset, make_loader
    from reslab.training import evaluate
    from reslab.weights import save_checkpoint

    run_cfg = json.loads((args.run_dir / "config.json").read_text())
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    data, name = run_cfg["data"], run_cfg["model"]
    model = reslab.load_checkpoint(args.run_dir / "model.safetensors").float().eval()
    test = load_dataset(data, "test", classes=run_cfg.get("classes"), progress=False)
    with torch.no_grad():
        result = evaluate(model, make_loader(test, 500, train=False))
    tag = f"reslab-{data}"
    out = ASSETS / f"{name}-{data}.safetensors"
    state = {
        "recipe": args.recipe,
        "metrics": {"test_accuracy": result.accuracy, "test_images": len(test)},
        "data": data,
        "measured_with": f"reslab eval MODEL --data {data} (fp32, official test split)",
        "train_wall_seconds": round(metrics["wall_seconds"]),
        "train_hardware": args.hardware,
    }
    save_checkpoint(out, model, **state)
    manifest_path = ASSETS / "manifest.json"
    manifest = [e for e in json.loads(manifest_path.read_text()) if e["tag"] != tag]
    manifest.append(
        {
            "model": name,
            "tag": tag,
            "file": out.name,
            "description": f"{name} trained by reslab on {data}",
            "metrics": {f"{data.replace('-', '_')}_test_top1": round(100 * result.accuracy, 2)},
            "recipe": args.recipe,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        }
    )
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{name}@{tag}: test top-1 {result.accuracy:.4f}, {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
