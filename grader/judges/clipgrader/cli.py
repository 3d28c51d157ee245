"""``label-grader clipgrader-{grade,train,eval}`` sub-commands."""
from __future__ import annotations

import json

from .model import DEFAULT_MODEL, DEFAULT_PRETRAINED


def _dataset(args):
    import fiftyone as fo

    ds = fo.load_dataset(args.dataset)
    return ds.match_tags(args.tags) if getattr(args, "tags", None) else ds


def _model_args(p) -> None:
    p.add_argument("--dataset", required=True, help="an existing FiftyOne dataset")
    p.add_argument("--tags", nargs="*", help="only samples with any of these sample tags")
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"open_clip architecture (default {DEFAULT_MODEL}; ViT-B-32 is cheaper)")
    p.add_argument("--pretrained", default=DEFAULT_PRETRAINED,
                   help="open_clip pretrained tag or local weights file; 'none' = random weights")
    p.add_argument("--checkpoint", help="ClipGrader checkpoint (overrides --model/--pretrained)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                   help="bf16/fp16: image tower under autocast (grading/evaluation on GPUs)")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")


def _pretrained(v: str | None) -> str | None:
    return None if v in (None, "", "none", "None") else v


def _progress(label: str):
    import sys

    def cb(done: int, total: int) -> None:
        sys.stderr.write(f"\r{label} {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
    return cb


def cmd_grade(args) -> int:
    from .grade import grade_clipgrader

    rep = grade_clipgrader(_dataset(args), args.field, model_name=args.model,
                           pretrained=_pretrained(args.pretrained), checkpoint=args.checkpoint,
                           device=args.device, precision=args.precision,
                           all_classes=args.all_classes,
                           bad_threshold=args.bad_threshold,
                           background_threshold=args.background_threshold,
                           batch_size=args.batch_size, num_workers=args.workers,
                           progress=_progress("graded"))
    print(rep.summary())
    if args.json:
        print(json.dumps(rep.to_dict(), default=str))
    return 0


def cmd_train(args) -> int:
    from .train import train_clipgrader

    res = train_clipgrader(_dataset(args), args.gt_field, args.out_dir, model_name=args.model,
                           pretrained=_pretrained(args.pretrained),
                           init_checkpoint=args.checkpoint, device=args.device,
                           epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           lora_rank=args.lora_rank, val_fraction=args.val_fraction,
                           min_size=args.min_size, seed=args.seed, resume=args.resume,
                           num_workers=args.workers, progress=_progress("step"))
    print(f"{'epoch':>5} {'train_loss':>11} {'val_loss':>9} {'val_acc':>8}")
    for h in res.history:
        print(f"{h['epoch']:>5} {h['train_loss']:>11.4f} {h.get('val_loss', float('nan')):>9.4f} "
              f"{h.get('val_accuracy', float('nan')):>8.4f}")
    print(f"best: {res.best_checkpoint}\nlast: {res.last_checkpoint}")
    if args.json:
        print(json.dumps(res.to_dict(), default=str))
    return 0


def cmd_eval(args) -> int:
    from .evaluate import evaluate_clipgrader

    res = evaluate_clipgrader(_dataset(args), args.gt_field, model_name=args.model,
                              pretrained=_pretrained(args.pretrained), checkpoint=args.checkpoint,
                              device=args.device, precision=args.precision,
                              min_size=args.min_size, seed=args.seed,
                              batch_size=args.batch_size, num_workers=args.workers)
    print(res.table())
    if args.json:
        print(json.dumps(res.to_dict(), default=str))
    return 0


def add_clipgrader_commands(subparsers) -> None:
    """Add ``clipgrader-grade``, ``clipgrader-train`` and ``clipgrader-eval`` to a CLI."""
    g = subparsers.add_parser("clipgrader-grade", help="grade every box with ClipGrader")
    _model_args(g)
    g.add_argument("--field", default="ground_truth")
    g.add_argument("--all-classes", action="store_true", help="also predict each box's class")
    g.add_argument("--bad-threshold", type=float, default=0.5)
    g.add_argument("--background-threshold", type=float, default=0.5)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--workers", type=int, default=None,
                   help="decode/render threads (default: cores - 1, at most 8)")
    g.set_defaults(func=cmd_grade)

    t = subparsers.add_parser("clipgrader-train", help="fine-tune ClipGrader on a dataset's GT")
    _model_args(t)
    t.add_argument("--gt-field", default="ground_truth")
    t.add_argument("--out-dir", required=True)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=1e-5)
    t.add_argument("--lora-rank", type=int, default=0, help="0 = train the whole vision encoder")
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--min-size", type=float, default=20.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    t.add_argument("--workers", type=int, default=None)
    t.set_defaults(func=cmd_train)

    e = subparsers.add_parser("clipgrader-eval", help="evaluate ClipGrader on boxes made from GT")
    _model_args(e)
    e.add_argument("--gt-field", default="ground_truth")
    e.add_argument("--min-size", type=float, default=20.0)
    e.add_argument("--seed", type=int, default=12345)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--workers", type=int, default=None)
    e.set_defaults(func=cmd_eval)
