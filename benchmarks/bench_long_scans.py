"""Long scans: Dice of the shipped weights and of the COBRA peer file on long variants of the real scan, and
what the locate stage costs on a FLARE-sized whole-body volume.

    python benchmarks/bench_long_scans.py accuracy   # DSC table: abdomen-only vs long variants (both cards)
    python benchmarks/bench_long_scans.py cost       # 512x512x800 at 1.5 mm: locate vs bare forward, peak RSS
    python benchmarks/bench_long_scans.py rules      # the component rule vs largest-k vs every piece (both cards)
    python benchmarks/bench_long_scans.py overhead   # a short scan (benchS): this stage's cost vs the card without it
    python benchmarks/bench_long_scans.py seam       # DSC away from the seam where filler meets the cut-off organs

Long variants are abdpelvis3mm with mirrored organ-free slices appended (abdoseg.training.long_scans): organs at the
top (636 mm, chest-abdomen-pelvis length), at the bottom, in the middle, whole-body 1,386 mm and 2,000 mm, and
re-stored LPS / PIR copies; "pelvis only" is the organ-free part alone. A figure is what one run printed.
abdpelvis3mm's field of view ends inside the liver and the spleen (435 spleen voxels on its top slice), so where
filler is appended above it (organs at the bottom / in the middle) mirrored pelvis abuts cut-off organs: a seam
no real scan has. `seam` scores the slices at least 15 mm below the real scan's top in every variant.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.bench_pipeline import cpu_model  # noqa: E402

DATA = ROOT / "tests" / "data" / "flare21"
PEER = ROOT.parent / "shared" / "peers" / "cobra" / "cobra_abdomenct1k.onnx"
ORGANS = {1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}
#: name -> (mm appended below, mm appended above) to abdpelvis3mm (336 mm, organs in its upper 138 mm)
VARIANTS = {"long636_top": (300, 0), "long636_bottom": (0, 300), "long786_middle": (225, 225),
            "long1386": (525, 525), "long2000_top": (1664, 0), "long2000_middle": (832, 832)}


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """abdoseg.evaluation.metrics.dice, NaN (shown "—") where the organ is absent from both."""
    from abdoseg.evaluation.metrics import dice as dsc

    return float("nan") if not (gt.any() or pred.any()) else dsc(gt, pred)


def scan_length_mm(image) -> float:
    """Extent along the patient's S/I axis."""
    from abdoseg.inference.grid.orientation import orientation_of

    axis = next(i for i, c in enumerate(orientation_of(image.GetDirection())) if c in "SI")
    return image.GetSize()[axis] * image.GetSpacing()[axis]


def variants(case: str = "abdpelvis3mm"):
    """(name, image, label) of the abdomen-only scan and its long and re-stored variants."""
    import SimpleITK as sitk

    from abdoseg.training.long_scans import long_scan, organ_free_scan

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


def accuracy(runtime: str, threads: int, card: str | None = None) -> None:
    import SimpleITK as sitk

    from abdoseg.inference.card import DEFAULT_CARD
    from abdoseg.inference.pipeline import Predictor, StageClock

    cards = [("shipped", Predictor.load(card or DEFAULT_CARD, runtime=runtime, threads=threads))]
    if PEER.exists():
        cards.append(("cobra peer", Predictor.load("cobra", PEER, runtime=runtime, threads=threads)))
    print(f"# {cpu_model()}; {runtime}, {threads} threads")
    print("| card | scan | length mm | located (mm from foot) | " + " | ".join(ORGANS.values()) + " | organs found |")
    print("|---|---|---|---|" + "---|" * (len(ORGANS) + 1))
    for name, image, label in variants():
        gt = sitk.GetArrayFromImage(label)
        for card_name, predictor in cards:
            clock = StageClock()
            pred = predictor.segment_image(image, clock)
            scores = [dice(gt == k, pred == k) for k in ORGANS]
            loc = clock.details.get("locate", {}).get("organs", {}).get("mm")
            mm = scan_length_mm(image)
            print(f"| {card_name} | {name} | {mm:.0f} | {loc or 'not located'} | "
                  + " | ".join("—" if np.isnan(d) else f"{d:.3f}" for d in scores)
                  + f" | {', '.join(clock.organs_found or []) or 'none'} |")


def rules(runtime: str, threads: int, card: str | None = None) -> None:
    """DSC of both cards on both real scans under three cleanup rules: largest-k, the card's rule, every piece."""
    import dataclasses

    import SimpleITK as sitk

    from abdoseg.inference.card import DEFAULT_CARD
    from abdoseg.inference.labels import KEEP_COMPONENTS
    from abdoseg.inference.pipeline import Predictor

    variants = {"largest-k (1, 2, 1, 1)": {1: 1, 2: 2, 3: 1, 4: 1}, "FLARE21 rule": KEEP_COMPONENTS, "every piece": {}}
    cards = [("shipped", Predictor.load(card or DEFAULT_CARD, runtime=runtime, threads=threads))]
    if PEER.exists():
        cards.append(("cobra peer", Predictor.load("cobra", PEER, runtime=runtime, threads=threads)))
    print(f"# {cpu_model()}; {runtime}, {threads} threads")
    print("| model, scan | " + " | ".join(variants) + " |\n|---|" + "---|" * len(variants))
    for card_name, predictor in cards:
        for case in ("abdpelvis3mm", "upperabd1mm"):
            image = sitk.ReadImage(str(DATA / "imagesTr" / f"{case}_0000.nii.gz"))
            gt = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "labelsTr" / f"{case}.nii.gz")))
            cells = []
            for rule in variants.values():
                predictor.card = dataclasses.replace(predictor.card, keep_components=rule)
                pred = predictor.segment_image(image)
                cells.append(" / ".join("—" if np.isnan(d) else f"{d:.3f}" for d in (dice(gt == k, pred == k) for k in ORGANS)))
            print(f"| {card_name}, {case} | " + " | ".join(cells) + " |")


def overhead(runtime: str, threads: int, repeats: int) -> None:
    """What the locate stage and the component rule add to a scan no longer than the canvas (benchS, 335 mm):
    Predictor.segment with the shipped card against the same card without a locator and with largest-k counts,
    interleaved, CPU seconds of this process (robust to other load on the machine) and wall seconds."""
    import dataclasses

    import SimpleITK as sitk

    from abdoseg.inference.grid.scan import Grid, canonical_hu
    from abdoseg.inference.pipeline import Predictor, StageClock
    from benchmarks.bench_pipeline import ensure_volumes

    image = sitk.ReadImage(str(ensure_volumes(["S"])["S"]))
    ct, spacing, _ = canonical_hu(sitk.GetArrayViewFromImage(image), Grid.of(image), "RAS")
    new = Predictor.load(runtime=runtime, threads=threads)
    old = Predictor(dataclasses.replace(new.card, locator=None, keep_components={1: 1, 2: 2, 3: 1, 4: 1}),
                    new.session, runtime=new.runtime)
    timings: dict[str, list[tuple[float, float, float]]] = {"with": [], "without": []}
    for i in range(repeats + 1):
        for name, predictor in (("with", new), ("without", old)):
            clock, cpu, wall = StageClock(), time.process_time(), time.perf_counter()
            predictor.segment(ct, spacing, clock)
            if i:  # the first round warms both up
                timings[name].append((time.process_time() - cpu, time.perf_counter() - wall, clock.seconds["labels"]))
    med = {k: [float(np.median([t[j] for t in v])) for j in range(3)] for k, v in timings.items()}
    print(f"# {cpu_model()}; {runtime}, {threads} threads; benchS 512x512x134 (335 mm: not located); {repeats} rounds")
    for k, (cpu, wall, labels) in med.items():
        print(f"{k:8} locate stage + rule: segment CPU {cpu:.3f} s, wall {wall:.3f} s, labels stage {labels:.4f} s")
    print(f"difference: CPU {med['with'][0] - med['without'][0]:+.3f} s ({(med['with'][0] / med['without'][0] - 1):+.1%}), "
          f"labels stage {med['with'][2] - med['without'][2]:+.4f} s")


def whole_body_volume() -> Path:
    """512x512x800 at 1.5 mm (1,200 mm), abdomen at the head end: benchM (512x512x336 at 1 mm, from abdpelvis3mm)
    resampled to 1.5 mm slices, its organ-free slices mirrored below it. Made once into .cache/bench."""
    import SimpleITK as sitk

    from abdoseg.training.long_scans import long_scan
    from benchmarks.bench_pipeline import CACHE, ensure_volumes

    out = CACHE / "imagesTs" / "benchWB_0000.nii.gz"
    if out.exists():
        return out
    image = sitk.ReadImage(str(ensure_volumes(["M"])["M"]))
    label = sitk.ReadImage(str(CACHE / "labelsTs" / "benchM.nii.gz"))
    size = (*image.GetSize()[:2], 224)
    spacing = (*image.GetSpacing()[:2], 1.5)
    image, label = (sitk.Resample(im, size, sitk.Transform(), interp, im.GetOrigin(), spacing, im.GetDirection(),
                                  fill, im.GetPixelID())
                    for im, interp, fill in ((image, sitk.sitkLinear, -1024), (label, sitk.sitkNearestNeighbor, 0)))
    image, _ = long_scan(image, label, (800 - 224) * 1.5, 0)
    sitk.WriteImage(image, str(out))
    return out


def cost(runtime: str, threads: int, repeats: int) -> None:
    """Cold predict.sh on the whole-body volume: the locate stage's seconds (from the case log) against one bare
    network forward (steady state), peak RSS, and the whole run."""
    import statistics

    from abdoseg.inference.card import DEFAULT_CARD
    from benchmarks.bench_pipeline import BareForward, cold_run

    scan = whole_body_volume()
    extra = ["--runtime", runtime, "--threads", str(threads), "--device", "cpu"]
    forward = statistics.median(BareForward(DEFAULT_CARD, None, runtime, threads).steady(repeats))
    runs = [cold_run(scan, extra) for _ in range(repeats)]
    locate = [r["record"]["seconds"]["locate"] for r in runs]
    med = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]["record"]
    print(f"# {cpu_model()}; {runtime}, {threads} threads; {scan.name}: 512x512x800 at 1.5 mm (1,200 mm)")
    print(f"bare network forward, steady (median of {repeats}): {forward:.3f} s")
    print(f"locate stage, cold runs: {', '.join(f'{t:.3f}' for t in locate)} s; median "
          f"{statistics.median(locate):.3f} s = {statistics.median(locate) / forward:.1%} of the bare forward")
    walls = ", ".join(f"{r['wall']:.2f}" for r in runs)
    print(f"cold e2e: {walls} s; peak RSS "
          f"{max(r['rss_mb'] for r in runs):.0f} MB")
    print(f"located {med['locate']['organs']['mm']} mm, window {med['locate']['window']['slices']} slices; stages "
          + " ".join(f"{k} {v:.2f}" for k, v in med["seconds"].items()))


SEAM_MM = 15.0


def seam(runtime: str, threads: int, card: str | None = None) -> None:
    """DSC on the canonical slices of the real scan at least SEAM_MM below its top, per variant and card."""
    import SimpleITK as sitk

    from abdoseg.inference.card import DEFAULT_CARD
    from abdoseg.inference.grid.scan import Grid, canonical_hu
    from abdoseg.inference.pipeline import Predictor

    cards = [("shipped", Predictor.load(card or DEFAULT_CARD, runtime=runtime, threads=threads))]
    if PEER.exists():
        cards.append(("cobra peer", Predictor.load("cobra", PEER, runtime=runtime, threads=threads)))
    canonical = lambda a, img: canonical_hu(a.astype(np.int16), Grid.of(img), "RAS")[0]  # noqa: E731
    print(f"# {cpu_model()}; {runtime}, {threads} threads; slices >= {SEAM_MM:.0f} mm below the real scan's top")
    print("| card | scan | " + " | ".join(ORGANS.values()) + " |")
    print("|---|---|" + "---|" * len(ORGANS))
    for name, image, label in variants():
        below_mm = VARIANTS.get(name.split()[0], (0, 0))[0] if name != "abdomen only" else 0
        if name.startswith("pelvis"):
            continue
        gt = canonical(sitk.GetArrayFromImage(label), label)
        spacing = sorted(label.GetSpacing())[0]  # abdpelvis3mm: 3 mm isotropic
        top = int(round(below_mm / spacing)) + 112 - int(round(SEAM_MM / spacing))
        for card_name, predictor in cards:
            pred = canonical(predictor.segment_image(image), label)
            scores = [dice(gt[:top] == k, pred[:top] == k) for k in ORGANS]
            print(f"| {card_name} | {name} | " + " | ".join("—" if np.isnan(d) else f"{d:.3f}" for d in scores) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("accuracy", "cost", "rules", "overhead", "seam"))
    p.add_argument("--runtime", default="openvino", choices=("openvino", "onnxruntime"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--card", default=None, help="model card (default: the shipped one)")
    args = p.parse_args()
    if args.what in ("cost", "overhead"):
        {"cost": cost, "overhead": overhead}[args.what](args.runtime, args.threads, args.repeats)
    else:
        {"accuracy": accuracy, "rules": rules, "seam": seam}[args.what](args.runtime, args.threads, args.card)


if __name__ == "__main__":
    main()
