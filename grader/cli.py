"""``label-grader`` command line: the demo job and SDK entry points for scripts and CI.

Feature modules add their own sub-commands (``add_*_commands(subparsers)``).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

# (module, function) pairs that add their feature's sub-commands.
_COMMAND_PROVIDERS = [
    ("grader.judges.clipgrader.cli", "add_clipgrader_commands"),
    ("grader.judges.vlm.cli", "add_vlm_commands"),
]


def default_data_dir() -> Path:
    """``$LABEL_GRADER_DATA`` or the ``shared/data`` folder beside the repository."""
    env = os.environ.get("LABEL_GRADER_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def _load_dataset(args):
    import fiftyone as fo

    if getattr(args, "dataset", None):
        return fo.load_dataset(args.dataset)
    raise SystemExit("pass --dataset NAME (an existing FiftyOne dataset)")


def cmd_demo(args) -> int:
    """Load coco128 and grade it in one call (YOLOX-Nano, every judge that can run, the
    ensemble); print the most suspect labels and the top overlooked-object candidates."""
    from . import io
    from .pipeline import grade

    data = Path(args.data or default_data_dir())
    root = data / "coco128"
    if not (root / "labels.json").exists():
        raise SystemExit(f"coco128 not found under {data}; set LABEL_GRADER_DATA or --data")
    os.environ.setdefault("LABEL_GRADER_DETECTORS", str(data / "detectors"))
    ds = io.load_coco(str(root / "images"), str(root / "labels.json"), name=args.name,
                      overwrite=True)
    ds.persistent = args.persistent
    print(f"Loaded '{ds.name}': {len(ds)} images, {ds.count('ground_truth.detections')} boxes")
    opts = {}
    if args.high_probability_threshold is not None:
        opts["cleanlab"] = {"high_probability_threshold": args.high_probability_threshold}
    rep = grade(ds, "ground_truth", detector=args.detector, **opts)
    print(rep.summary())

    fps, labels, scores, zl, zo = ds.values([
        "filepath", "ground_truth.detections.label", "ground_truth.detections.ensemble_any",
        "ground_truth.detections.zoom_label_prob", "ground_truth.detections.zoom_other_label"])
    rows = [(sc, lab, zlp, zol, fp) for fp, ls, ss, zs, os_ in zip(fps, labels, scores, zl, zo)
            for lab, sc, zlp, zol in zip(ls or [], ss or [None] * len(ls or []),
                                        zs or [None] * len(ls or []), os_ or [None] * len(ls or []))
            if sc is not None]
    rows.sort(key=lambda r: -r[0])
    print(f"\nMost suspect labels (ensemble_any, high = suspect):")
    print(f"{'score':>6}  {'label':14} {'zoom p(label)':>13} {'zoom other':14} image")
    for sc, lab, zlp, zol, fp in rows[:args.top]:
        zp = f"{zlp:13.2f}" if zlp is not None else f"{'-':>13}"
        print(f"{sc:6.3f}  {lab:14} {zp} {str(zol or ''):14} {os.path.basename(fp)}")
    cl, cs = ds.values(["ground_truth_overlooked.detections.label",
                        "ground_truth_overlooked.detections.overlooked_score"])
    cands = sorted(((s, l, os.path.basename(fp)) for fp, ls, ss in zip(fps, cl, cs)
                    for l, s in zip(ls or [], ss or []) if s is not None), reverse=True)
    print(f"\nOverlooked-object candidates: {len(cands)} (field ground_truth_overlooked); top:")
    for s, l, f in cands[:min(args.top, 10)]:
        print(f"{s:6.3f}  {l:14} {f}")
    return 0


def cmd_cleanlab(args) -> int:
    from .judges.cleanlab import run_cleanlab

    ds = _load_dataset(args)
    kw = {k: v for k, v in vars(args).items() if k in (
        "high_probability_threshold", "low_probability_threshold", "badloc_threshold",
        "swap_threshold", "overlooked_threshold", "probs_attr") and v is not None}
    rep = run_cleanlab(ds, args.gt_field, args.pred_field, **kw)
    print(rep.summary())
    if args.json:
        print(json.dumps(rep.to_dict(), default=str))
    return 0


def cmd_save_views(args) -> int:
    from .fields import detections_path
    from .review import save_review_views

    ds = _load_dataset(args)
    detections_path(ds, args.gt_field)  # a wrong field is an error, not an empty success
    for name in save_review_views(ds, args.gt_field):
        print(name)
    return 0


def cmd_fix_log(args) -> int:
    from .review import fix_log

    for r in fix_log(_load_dataset(args), limit=args.limit):
        print(f"#{r.seq:<5} {r.time:%Y-%m-%d %H:%M:%S} {r.user:12} {r.kind:12} {r.field} "
              f"{r.label_id} {r.fix_id}")
    return 0


def cmd_undo(args) -> int:
    from .review import undo_fix

    rec = undo_fix(_load_dataset(args), args.fix_id, force=args.force)
    print(f"undone: #{rec.seq} {rec.kind} on {rec.field} label {rec.label_id}")
    return 0


def cmd_ensemble(args) -> int:
    from .ensemble import compute_ensemble

    rep = compute_ensemble(_load_dataset(args), args.gt_field, trusted_tag=args.trusted_tag)
    print(rep.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="label-grader", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="load coco128, grade it (YOLOX-Nano + every judge), print suspects")
    d.add_argument("--data", help="folder holding coco128/ and detectors/ (default: ../shared/data)")
    d.add_argument("--name", default="label-grader-demo")
    d.add_argument("--top", type=int, default=15)
    d.add_argument("--persistent", action="store_true", help="keep the dataset for the App")
    d.add_argument("--detector", default="yolox-nano",
                   help="yolox-nano (default), yolov3-tiny, yolo-fastestv2 or an Ultralytics .onnx path")
    d.add_argument("--high-probability-threshold", type=float, default=None,
                   help="cleanlab's threshold (default: grade()'s recommended setting)")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("cleanlab", help="score an existing dataset with cleanlab ObjectLab")
    c.add_argument("--dataset", required=True)
    c.add_argument("--gt-field", default="ground_truth")
    c.add_argument("--pred-field", default="predictions")
    c.add_argument("--probs-attr")
    for name in ("high_probability_threshold", "low_probability_threshold", "badloc_threshold",
                 "swap_threshold", "overlooked_threshold"):
        c.add_argument("--" + name.replace("_", "-"), type=float)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cleanlab)

    v = sub.add_parser("save-views", help="save the review views (suspect <issue>, overlooked, reviewed)")
    v.add_argument("--dataset", required=True)
    v.add_argument("--gt-field", default="ground_truth")
    v.set_defaults(func=cmd_save_views)

    f = sub.add_parser("fix-log", help="list the dataset's fixes, newest first")
    f.add_argument("--dataset", required=True)
    f.add_argument("--limit", type=int, default=20)
    f.set_defaults(func=cmd_fix_log)

    u = sub.add_parser("undo", help="undo a fix (the newest by default)")
    u.add_argument("--dataset", required=True)
    u.add_argument("--fix-id")
    u.add_argument("--force", action="store_true", help="undo even if the label changed since")
    u.set_defaults(func=cmd_undo)

    e = sub.add_parser("ensemble", help="combine the judges' scores (reliability-weighted)")
    e.add_argument("--dataset", required=True)
    e.add_argument("--gt-field", default="ground_truth")
    e.add_argument("--trusted-tag", default="verified")
    e.set_defaults(func=cmd_ensemble)

    for mod, fn in _COMMAND_PROVIDERS:
        getattr(importlib.import_module(mod), fn)(sub)
    return p


def error_line(exc: BaseException) -> str:
    """One redacted line for a failed command: ``label-grader: error: <what went wrong>``."""
    from .redact import redact

    msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    msg = " ".join(redact(msg).split()) or type(exc).__name__
    return f"label-grader: error: {msg}"


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors print one line (no traceback unless ``--debug``) and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("label-grader: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if isinstance(e.code, str):  # raise SystemExit("message"): same one-line format
            print(error_line(RuntimeError(e.code)), file=sys.stderr)
            return 2
        raise
    except Exception as e:
        if args.debug:
            raise
        print(error_line(e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
