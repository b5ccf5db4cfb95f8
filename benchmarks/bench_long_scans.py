"""Long scans: Dice of the shipped weights and of the COBRA peer file on long variants of the real scan, and
what the locate stage costs on a FLARE-sized whole-body volume.

    python benchmarks/bench_long_scans.py accuracy   # DSC table: abdomen-only vs long variants (both cards)
    python benchmarks/bench_long_scans.py cost       # 512x512x800 at 1.5 mm: locate vs bare forward, peak RSS

Long variants are abdpelvis3mm with mirrored organ-free slices appended (training.long_scans): organs at the
top (636 mm, chest-abdomen-pelvis length), at the bottom, in the middle, whole-body 1,386 mm and 2,000 mm, and
re-stored LPS / PIR copies; "pelvis only" is the organ-free part alone. A figure is what one run printed.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data" / "flare21"
PEER = ROOT.parent / "shared" / "peers" / "cobra" / "cobra_abdomenct1k.onnx"
ORGANS = {1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}
#: name -> (mm appended below, mm appended above) to abdpelvis3mm (336 mm, organs in its upper 138 mm)
VARIANTS = {"long636_top": (300, 0), "long636_bottom": (0, 300), "long786_middle": (225, 225),
            "long1386": (525, 525), "long2000_top": (1664, 0), "long2000_middle": (832, 832)}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    denominator = int(gt.sum()) + int(pred.sum())
    return float("nan") if denominator == 0 else 2.0 * int(np.logical_and(gt, pred).sum()) / denominator


def variants(case: str = "abdpelvis3mm"):
    """(name, image, label) of the abdomen-only scan and its long and re-stored variants."""
    import SimpleITK as sitk

    from training.long_scans import long_scan, organ_free_scan

    image = sitk.ReadImage(str(DATA / "imagesTr" / f"{case}_0000.nii.gz"))
    label = sitk.ReadImage(str(DATA / "labelsTr" / f"{case}.nii.gz"))
    yield "abdomen only", image, label
    for name, (below, above) in VARIANTS.items():
        img, lab = long_scan(image, label, below, above)
        yield name, img, lab
        if name == "long636_top":
            for code in ("LPS", "PIR"):
                yield f"{name} {code}", sitk.DICOMOrient(img, code), sitk.DICOMOrient(lab, code)
    img, lab = organ_free_scan(image, label)
    yield "pelvis only", img, lab
    img, lab = long_scan(*organ_free_scan(image, label), 0, 900)
    yield "pelvis only 1,100 mm", img, lab


def accuracy(runtime: str, threads: int) -> None:
    import SimpleITK as sitk

    from inference.pipeline import Predictor, StageClock

    cards = [("shipped", Predictor.load(runtime=runtime, threads=threads))]
    if PEER.exists():
        cards.append(("cobra peer", Predictor.load("cobra", PEER, runtime=runtime, threads=threads)))
    print(f"# {cpu_model()}; {runtime}, {threads} threads")
    print("| card | scan | length mm | located (mm from foot) | " + " | ".join(ORGANS.values()) + " | organs found |")
    print("|---|---|---|---|" + "---|" * (len(ORGANS) + 1))
    for name, image, label in variants():
        gt = sitk.GetArrayFromImage(label)
        length = image.GetSize()[2] * image.GetSpacing()[2] if name.count(" ") == 0 else float("nan")
        for card_name, predictor in cards:
            clock = StageClock()
            pred = predictor.segment_image(image, clock)
            scores = [dice(gt == k, pred == k) for k in ORGANS]
            loc = clock.details.get("locate", {}).get("organs", {}).get("mm")
            extent = sitk.GetArrayViewFromImage(image).shape
            mm = max(s * n for s, n in zip(image.GetSpacing(), extent[::-1]))
            print(f"| {card_name} | {name} | {mm:.0f} | {loc or 'not located'} | "
                  + " | ".join("—" if np.isnan(d) else f"{d:.3f}" for d in scores)
                  + f" | {', '.join(clock.organs_found or []) or 'none'} |")
        del length


def cost(runtime: str, threads: int, repeats: int) -> None:
    """The locate stage on a 512x512x800 scan at 1.5 mm (1,200 mm, abdomen at the top) vs the bare forward."""
    import resource

    from inference.pipeline import Predictor, StageClock

    predictor = Predictor.load(runtime=runtime, threads=threads)
    rng = np.random.default_rng(0)
    ct = np.full((800, 512, 512), -1000, np.int16)
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) / 200) ** 2 + ((xx - 256) / 230) ** 2 < 1
    ct[:, body] = 20
    ct += rng.normal(0, 15, (1, 512, 512)).astype(np.int16)
    spacing = (1.5, 0.8, 0.8)
    canvas = ct[-256:]
    feeds = {"ct": canvas, "spacing": np.asarray(spacing, np.float32)}
    predictor.session.run(feeds)
    t0 = time.perf_counter()
    for _ in range(repeats):
        predictor.session.run(feeds)
    forward = (time.perf_counter() - t0) / repeats
    clock = StageClock()
    predictor.segment(ct, spacing, clock)  # first: opens and compiles the locator
    locate = []
    for _ in range(repeats):
        clock = StageClock()
        predictor.segment(ct, spacing, clock)
        locate.append(clock.seconds["locate"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# {cpu_model()}; {runtime}, {threads} threads; scan 512x512x800 at 1.5 mm (1,200 mm)")
    print(f"graph on the 256-slice window (steady, mean of {repeats}): {forward:.3f} s")
    print(f"locate stage (steady, mean of {repeats}): {np.mean(locate):.3f} s = {np.mean(locate) / forward:.1%} of it")
    print(f"peak RSS of this process: {rss:.0f} MB (the scan itself: {ct.nbytes / 2**20:.0f} MB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("accuracy", "cost"))
    p.add_argument("--runtime", default="openvino", choices=("openvino", "onnxruntime"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    accuracy(args.runtime, args.threads) if args.what == "accuracy" else cost(args.runtime, args.threads, args.repeats)


if __name__ == "__main__":
    main()
