"""int8 accuracy on a CPU this machine is not: onnxruntime's and PT2E's int8 kernels run under
user-mode emulation of an AVX2-only x86 CPU (``qemu-x86_64 -cpu Haswell-v4``: no AVX-512, no
VNNI), so that they take the non-VNNI code paths whose u8xs8 pair sums saturate in 16 bits.
Only accuracy means anything under emulation: every instruction is emulated, so times do not.

    # 1. natively: images, fp32 logits, the int8 ONNX files (8-bit and 7-bit weights)
    python benchmarks/int8_emulated.py prepare WORK --spec resnet50_v1@keras-imagenet \\
        --data IMAGENETTE --limit 400 --calib IMAGENETTE --calib-images 128
    # 2. emulated: each ONNX file, with and without onnxruntime's exact-int8 session option
    qemu-x86_64 -cpu Haswell-v4 .venv/bin/python benchmarks/int8_emulated.py onnx WORK
    # 3. emulated: the PT2E int8 rung (export, calibration, compile and evaluation all emulated)
    qemu-x86_64 -cpu Haswell-v4 .venv/bin/python benchmarks/int8_emulated.py pt2e WORK \\
        --weight-bits 7 [--activation-bits 7]
    # 4. natively: the table
    python benchmarks/int8_emulated.py table WORK

On a real AVX2 machine run steps 2 and 3 without ``qemu-x86_64 …`` (and ``reslab bench
--ladder``, whose speeds then mean something). ``onnx`` imports only numpy and onnxruntime, so
that it starts in seconds under emulation. Results go to ``WORK/*.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

BATCH = 16  # images per run; the eval images are padded to whole batches (label -1)


def _save(work: Path, name: str, result: dict) -> None:
    (work / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _scores(logits, labels, fp32) -> dict:
    """top-1 on the labelled images, agreement with fp32 and max |dlogit| (numpy arrays)."""
    import numpy as np

    real = labels >= 0
    pred, ref = logits.argmax(1), fp32.argmax(1)
    return {
        "images": int(real.sum()),
        "top1": float((pred[real] == labels[real]).mean()),
        "fp32_top1": float((ref[real] == labels[real]).mean()),
        "agreement_with_fp32": float((pred[real] == ref[real]).mean()),
        "max_abs_dlogit": float(np.abs(logits[real] - fp32[real]).max()),
        "fp32_max_abs_logit": float(np.abs(fp32[real]).max()),
    }


# ---------------------------------------------------------------------------- native
def prepare(args: argparse.Namespace) -> None:
    """Decode the images once, record fp32 logits, write both int8 ONNX files."""
    import numpy as np
    import torch

    from reslab.data import load_dataset
    from reslab.inference import calibration_images, ladder_eval_data
    from reslab.inference.cpu_int8 import int8_choice
    from reslab.inference.export import export_onnx
    from reslab.inference.onnx_engines import quantize_onnx
    from reslab.weights import resolve_model

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = resolve_model(args.spec).eval()
    data = load_dataset(args.data, "test", data_dir=args.data_dir)
    batches = list(ladder_eval_data(data, model, BATCH, limit=args.limit)())
    images = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    with torch.no_grad():
        fp32 = torch.cat([model(x) for x, _ in batches]).float()
    train = load_dataset(args.calib, "train", data_dir=args.data_dir)
    calib = calibration_images(train, args.calib_images, model_cfg=model.default_cfg)
    np.save(work / "images.npy", images.numpy())
    np.save(work / "labels.npy", labels.numpy())
    np.save(work / "fp32_logits.npy", fp32.numpy())
    torch.save(calib, work / "calib.pt")
    fp32_file = export_onnx(model, work / "fp32.onnx", images[:2])
    batched = list(calib.split(BATCH))
    for target, name in (("vnni", "int8-8bit.onnx"), ("any", "int8-7bit.onnx")):
        quantize_onnx(fp32_file, work / name, batched, choice=int8_choice(target))
    facts = {
        "spec": args.spec,
        "data": args.data,
        "limit": args.limit,
        "calib": args.calib,
        "calib_images": len(calib),
        "torch": torch.__version__,
    }
    _save(work, "prepare.json", facts)


# ---------------------------------------------------------------------------- emulated
def _cpu_seen() -> dict:
    """What the emulated CPU reports (onnxruntime picks its kernels from the same CPUID)."""
    try:
        import torch

        caps = torch.cpu.get_capabilities()
        keys = ("avx2", "avx512_f", "avx512_vnni", "avx_vnni", "amx_int8")
        return {k: bool(caps.get(k)) for k in keys}
    except ImportError:
        return {}


def onnx(args: argparse.Namespace) -> None:
    """Each int8 file on onnxruntime, default session and exact-int8 session."""
    import numpy as np
    import onnxruntime as ort

    work = Path(args.work)
    images, labels = np.load(work / "images.npy"), np.load(work / "labels.npy")
    fp32 = np.load(work / "fp32_logits.npy")
    rows = []
    for name in ("int8-8bit.onnx", "int8-7bit.onnx"):
        for exact in (False, True) if args.sessions == "both" else (False,):
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            if exact:
                options.add_session_config_entry("session.x64quantprecision", "1")
            session = ort.InferenceSession(
                str(work / name), options, providers=["CPUExecutionProvider"]
            )
            start = time.perf_counter()
            logits = np.concatenate(
                [
                    session.run(None, {"images": images[i : i + BATCH]})[0]
                    for i in range(0, len(images), BATCH)
                ]
            )
            row = {"file": name, "session.x64quantprecision": int(exact)}
            row |= _scores(logits, labels, fp32)
            row["seconds_emulated_meaningless"] = time.perf_counter() - start
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"onnxruntime": ort.__version__, "machine": platform.machine(), "rows": rows}
    _save(work, f"onnx-{args.tag}.json", result | {"cpu_seen": _cpu_seen()})


def pt2e(args: argparse.Namespace) -> None:
    """The PT2E int8 rung as reslab builds it (strict export, x86 quantizer, compile)."""
    import numpy as np
    import torch
    from torch._inductor import config

    from reslab.inference import pt2e_int8
    from reslab.inference.export import to_torch_layers
    from reslab.weights import resolve_model

    work = Path(args.work)
    spec = json.loads((work / "prepare.json").read_text())["spec"]
    torch.set_num_threads(args.threads)
    images = torch.from_numpy(np.load(work / "images.npy"))
    labels, fp32 = np.load(work / "labels.npy"), np.load(work / "fp32_logits.npy")
    calib = list(torch.load(work / "calib.pt", weights_only=True).split(BATCH))
    model = to_torch_layers(resolve_model(spec)).eval()
    start = time.perf_counter()
    bits = {"weight_bits": args.weight_bits, "activation_bits": args.activation_bits}
    quantized = pt2e_int8.quantize(model, images[:2], calib, **bits)
    run = torch.compile(quantized, dynamic=False)  # as the int8 engine does: frozen weights
    with torch.no_grad(), config.patch(freezing=True):
        x = images[:BATCH].contiguous(memory_format=torch.channels_last)
        run(x)
        prepared = time.perf_counter() - start
        logits = torch.cat(
            [
                run(images[i : i + BATCH].contiguous(memory_format=torch.channels_last))
                for i in range(0, len(images), BATCH)
            ]
        )
    row = {"engine": "int8 (PT2E)", **bits}
    row |= _scores(logits.float().numpy(), labels, fp32)
    row["prepare_seconds_emulated_meaningless"] = prepared
    name = f"pt2e-w{args.weight_bits}a{args.activation_bits}-{args.tag}.json"
    _save(work, name, {"torch": torch.__version__, "cpu_seen": _cpu_seen(), "row": row})


# ---------------------------------------------------------------------------- table
def table(args: argparse.Namespace) -> None:
    work = Path(args.work)
    print("| run | rung | quantisation | session option | top-1 | change | agree | max dlogit |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for path in sorted(work.glob("onnx-*.json")) + sorted(work.glob("pt2e-*.json")):
        result = json.loads(path.read_text())
        rows = result.get("rows") or [result["row"]]
        for r in rows:
            if "file" in r:
                rung, bits = "onnx-int8", r["file"].split("-")[1].removesuffix(".onnx")
                quant = f"{bits} weights"
                option = "x64quantprecision=1" if r["session.x64quantprecision"] else "-"
            else:
                rung, option = "int8 (PT2E)", "-"
                quant = f"{r['weight_bits']}-bit weights, {r['activation_bits']}-bit activations"
            change = 100 * (r["top1"] - r["fp32_top1"])
            print(
                f"| {path.stem} | {rung} | {quant} | {option} | {100 * r['top1']:.2f} % | "
                f"{change:+.2f} | {100 * r['agreement_with_fp32']:.1f} % | "
                f"{r['max_abs_dlogit']:.2f} |"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("work")
    p.add_argument("--spec", default="resnet50_v1@keras-imagenet")
    p.add_argument("--data", required=True)
    p.add_argument("--calib", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, default=400)
    p.add_argument("--calib-images", type=int, default=128)
    for step in ("onnx", "pt2e"):
        p = sub.add_parser(step)
        p.add_argument("work")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--tag", default="emulated-haswell", help="names the result file")
        p.add_argument(
            "--sessions", choices=("both", "default"), default="both",
            help="onnx: also the exact-int8 session (session.x64quantprecision=1), or not",
        )  # fmt: skip
        if step == "pt2e":
            p.add_argument("--weight-bits", type=int, choices=(7, 8), default=8)
            p.add_argument("--activation-bits", type=int, choices=(7, 8), default=8)
    p = sub.add_parser("table")
    p.add_argument("work")
    args = parser.parse_args(argv)
    {"prepare": prepare, "onnx": onnx, "pt2e": pt2e, "table": table}[args.step](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
