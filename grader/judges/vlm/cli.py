"""``label-grader vlm-judge``: grade a dataset's labels with a local or HTTP VLM.

The API key is never a command-line argument (it would land in shell history and process
lists): pass the *name* of an environment variable with ``--api-key-env``.
"""
from __future__ import annotations

import json
import sys


def cmd_vlm_judge(args) -> int:
    import fiftyone as fo

    from . import make_backend, run_vlm_judge

    ds = fo.load_dataset(args.dataset)
    view = ds.limit(args.limit) if args.limit else ds.view()
    if args.backend == "transformers":
        backend = make_backend("transformers", args.model, device=args.device,
                               batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                               dtype=args.dtype)
    else:
        backend = make_backend("openai", args.model, base_url=args.base_url,
                               api_key_env=args.api_key_env, concurrency=args.concurrency,
                               timeout=args.timeout, max_retries=args.max_retries,
                               max_tokens=args.max_new_tokens)
    cache = False if args.no_cache else (args.cache_dir or None)
    last = [-1]

    def progress(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct >= last[0] + 10 or done == total:
            last[0] = pct
            print(f"  {done}/{total}", flush=True)

    rep = run_vlm_judge(view, backend, label_field=args.field, mode=args.mode, prompt=args.prompt,
                        sample_prompt=args.sample_prompt, threshold=args.threshold, cache=cache,
                        progress=progress, run_key=args.run_key)
    print(rep.summary())
    if args.json:
        print(json.dumps(rep.to_dict(), default=str))
    errors = sum(v for k, v in rep.skipped.items() if "backend_error" in k)
    if errors and not rep.labels_scored and not rep.info.get("samples_judged"):
        print(f"label-grader: error: the VLM backend answered none of {errors} requests "
              f"(last: {rep.info.get('last_backend_error')}); earlier verdicts were kept",
              file=sys.stderr)
        return 1
    return 0


def add_vlm_commands(subparsers) -> None:
    """Add ``vlm-judge`` to a CLI."""
    v = subparsers.add_parser("vlm-judge", help="grade labels with a vision-language model")
    v.add_argument("--dataset", required=True, help="an existing FiftyOne dataset")
    v.add_argument("--field", default="ground_truth")
    v.add_argument("--limit", type=int, help="only the first N samples")
    v.add_argument("--backend", choices=["openai", "transformers"], default="openai")
    v.add_argument("--model", required=True,
                   help="served model name (openai) or hub id / local directory (transformers)")
    v.add_argument("--base-url", default="http://localhost:8000/v1")
    v.add_argument("--api-key-env", help="NAME of the environment variable holding the API key")
    v.add_argument("--concurrency", type=int, default=4)
    v.add_argument("--timeout", type=float, default=60.0)
    v.add_argument("--max-retries", type=int, default=4)
    v.add_argument("--device", help="transformers: cuda / cpu (default: cuda if available)")
    v.add_argument("--dtype", help="transformers: e.g. bfloat16, float16, auto")
    v.add_argument("--batch-size", type=int, default=4)
    v.add_argument("--max-new-tokens", type=int, default=64)
    v.add_argument("--mode", choices=["detections", "samples", "both"], default="detections")
    v.add_argument("--prompt", default="stepwise",
                   help="yesno, stepwise, or a template string using {label}")
    v.add_argument("--sample-prompt", help="yesno, stepwise, or a template ({labels}, {num_boxes})")
    v.add_argument("--threshold", type=float, default=0.5,
                   help="tag suspect:vlm where P(label correct) < threshold")
    v.add_argument("--cache-dir", help="default: $LABEL_GRADER_CACHE_DIR or ~/.cache/label-grader")
    v.add_argument("--no-cache", action="store_true")
    v.add_argument("--run-key", default="vlm_judge")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_vlm_judge)
