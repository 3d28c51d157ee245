"""Where grade()'s time goes: a bare YOLOX-Nano pass, then one default grade(), step by step.

    OMP_NUM_THREADS=1 .venv/bin/python bench/grade_speed.py                # coco128-val, 128 images
    OMP_NUM_THREADS=1 .venv/bin/python bench/grade_speed.py --data raccoon --images 50
    OMP_NUM_THREADS=1 .venv/bin/python bench/grade_speed.py --profile         # + cProfile top 15

In one process: (1) the reference, a bare detector pass over the images (decode + the shipped
``yolox-nano`` + post-processing, as ``run_detector`` does it, nothing read from or written to
the database); (2) one ``grader.grade(ds)`` with every default, timed three ways:

- by its progress calls (``_harness.timed_progress`` / ``step_account``): each step's span
  from its first to its last call, and what no call brackets as "unattributed (DB reads/writes,
  between steps)", so the rows add up to grade()'s wall;
- per step's ``run()`` (``grader.pipeline.STEPS`` wrapped for the run): its wall and CPU, the
  database round trips it made (pymongo command monitoring: count and seconds), the mongod's CPU
  and the YOLOX forwards it ran (input px x images; cv2.dnn and onnxruntime);
- with ``--profile``: cProfile over grade() (its times then include the profiler's overhead),
  the top 15 functions by cumulative time, overall and among fiftyone / pymongo / bson.

Every figure per image and against the bare pass; process CPU seconds and peak RSS at the end.
A private mongod is started; nothing touches FiftyOne's database.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import subprocess
import sys
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Iterator

import _harness as H

H.one_thread_env()   # before numpy / cv2 / onnxruntime are imported

#: where work outside any step's run() is booked (load_detector, the steps' can_run checks)
OUTSIDE = "between steps"


class Recorder:
    """What each ``grade()`` step's ``run()`` did, booked to the step running at the time."""

    def __init__(self, mongod_pid: int | None) -> None:
        self.step = OUTSIDE
        self.mongod_pid = mongod_pid
        #: step -> [wall s, CPU s, mongod CPU s]
        self.runs: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        #: step -> [DB commands, seconds waiting for their replies]
        self.db: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        #: step -> Counter of (backend, input px) -> images through YOLOX
        self.passes: dict[str, Counter] = defaultdict(Counter)

    def mongod_cpu(self) -> float:
        """User + system CPU seconds of the private mongod so far (0 without one)."""
        if not self.mongod_pid:
            return 0.0
        with open(f"/proc/{self.mongod_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @contextmanager
    def in_step(self, name: str) -> Iterator[None]:
        t0, c0, m0 = time.perf_counter(), time.process_time(), self.mongod_cpu()
        self.step = name
        try:
            yield
        finally:
            self.step = OUTSIDE
            r = self.runs[name]
            r[0] += time.perf_counter() - t0
            r[1] += time.process_time() - c0
            r[2] += self.mongod_cpu() - m0


def listen_db(rec: Recorder) -> None:
    """Count every pymongo command and its round trip under the running step. Registered before
    FiftyOne makes its client (global listeners apply to clients created after)."""
    from pymongo import monitoring

    class Listener(monitoring.CommandListener):
        def started(self, event) -> None:
            pass

        def succeeded(self, event) -> None:
            d = rec.db[rec.step]
            d[0] += 1
            d[1] += event.duration_micros / 1e6

        def failed(self, event) -> None:
            self.succeeded(event)

    monitoring.register(Listener())


@contextmanager
def instrumented(rec: Recorder) -> Iterator[None]:
    """For the block: every grade() step's run() timed by ``rec``, and every YOLOX forward
    (cv2.dnn ``YoloXNano.predict``, onnxruntime ``OrtYolox.run``) counted by input size."""
    from grader import pipeline
    from grader.detectors.cvdnn import YoloXNano
    from grader.detectors.ort import OrtYolox

    def timed_run(name: str, run):
        def wrapped(ctx):
            with rec.in_step(name):
                return run(ctx)
        return wrapped

    def count(backend: str, fn, n_px):
        def wrapped(self, x, *a, **kw):
            n, px = n_px(self, x)
            if n:
                rec.passes[rec.step][backend, px] += n
            return fn(self, x, *a, **kw)
        return wrapped

    steps, predict, run = list(pipeline.STEPS), YoloXNano.predict, OrtYolox.run
    pipeline.STEPS[:] = [pipeline.Step(s.name, s.can_run, timed_run(s.name, s.run)) for s in steps]
    # YoloXNano.predict runs OrtYolox.run unless its backend is cv2.dnn: count each forward once
    YoloXNano.predict = count("cv2.dnn", predict, lambda self, ims: (
        len(ims) if self.backend == "cv2" else 0, self.size))
    OrtYolox.run = count("onnxruntime", run, lambda self, blob: (len(blob), blob.shape[-1]))
    try:
        yield
    finally:
        pipeline.STEPS[:] = steps
        YoloXNano.predict, OrtYolox.run = predict, run


def bare_pass(paths: list[str], batch_size: int = 8, backend: str = "auto") -> dict[str, float]:
    """The reference: ``run_detector``'s decode + predict loop on ``paths`` without the DB
    (``backend``: YOLOX-Nano's runtime, as ``YoloXNano``)."""
    from grader.detectors import load_detector
    from grader.detectors.runner import _batches, _decode, predict_boxes
    from grader.parallel import prefetch_map
    from grader.render import default_workers

    out: dict[str, float] = {}
    with H.timed(out, "load"):
        det = load_detector("yolox-nano")
        if backend != "auto":
            from grader.detectors.cvdnn import YoloXNano

            det = YoloXNano(str(H.DATA / "detectors" / "yolox-nano"), backend=backend)
    n_boxes = 0
    with H.timed(out, "pass"):
        for batch in _batches(prefetch_map(_decode, paths, workers=default_workers()),
                              batch_size):
            ims = [im for im in batch if im is not None]
            n_boxes += sum(len(b) for b in predict_boxes(det, ims))
    out["boxes"] = n_boxes
    return out


def peak_rss_mib() -> float:
    """This process's peak resident set (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_account(times: dict, t0: float, t1: float, n: int, bare: float) -> None:
    """grade()'s wall by its progress calls: each step's span, then the gaps as one row."""
    rows = H.step_account(times, t0, t1)
    wall = t1 - t0
    line = "{:46s} {:>8.1f} {:>9.0f} {:>6.1f}% {:>7.2f}x {:>8s}"
    print(f"\n{'by progress calls':46s} {'wall s':>8s} {'ms/image':>9s} {'share':>7s} "
          f"{'x bare':>8s} {'CPU s':>8s}")
    print(line.format("bare YOLOX-Nano pass (reference)", bare, 1e3 * bare / n, 100 * bare / wall,
                      1.0, "").rstrip())
    print(line.format("grade() total", wall, 1e3 * wall / n, 100.0, wall / bare, ""))
    gaps = [(k, s) for k, s in rows if k.startswith(("before ", "after ", "no progress"))]
    for step, s in rows:
        if (step, s) not in gaps:
            cpu = times[step][3] - times[step][2]
            print(line.format(f"  {step}", s, 1e3 * s / n, 100 * s / wall, s / bare,
                              f"{cpu:.1f}"))
    g = sum(s for _, s in gaps)
    print(line.format("  unattributed (DB reads/writes, between steps)", g, 1e3 * g / n,
                      100 * g / wall, g / bare, "").rstrip())
    print("    of which: " + ", ".join(f"{k} {s:.1f}" for k, s in gaps if s >= 0.05))


def torch_import_seconds() -> float:
    """Wall time of ``import torch, torchvision.ops`` in a fresh interpreter: what grade() pays
    once per process, between its steps, where the box grader first needs them."""
    code = ("import time; t = time.perf_counter(); import torch, torchvision.ops; "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def print_steps(rec: Recorder, n: int, bare: float, wall: float,
                torch_import: float | None = None) -> None:
    """grade()'s wall by its steps' run(): wall, CPU, DB round trips, mongod CPU, YOLOX passes;
    ``torch_import``: the first import of torch that grade() paid between its steps."""
    print(f"\n{'by step run()':22s} {'wall s':>7s} {'ms/img':>7s} {'x bare':>7s} {'CPU s':>6s} "
          f"{'DB cmds':>7s} {'DB s':>6s} {'mongod':>6s}  YOLOX forwards (px: images)")
    names = list(rec.runs) + [OUTSIDE]
    for name in names:
        if name == OUTSIDE:
            w = wall - sum(r[0] for r in rec.runs.values())
            cpu = mongod = float("nan")
        else:
            w, cpu, mongod = rec.runs[name]
        cmds, db_s = rec.db.get(name, (0, 0.0))
        passes = ", ".join(f"{b} {px}: {k}" for (b, px), k in sorted(rec.passes[name].items()))
        print(f"{name:22s} {w:7.1f} {1e3 * w / n:7.0f} {w / bare:7.2f} {cpu:6.1f} {cmds:7d} "
              f"{db_s:6.1f} {mongod:6.1f}  {passes}")
        if name == OUTSIDE and torch_import is not None:
            print(f"  of which the first import of torch + torchvision (once per process; "
                  f"{torch_import:.1f} s in a fresh interpreter): {torch_import / n * 1e3:.0f} "
                  f"ms/img, {torch_import / bare:.2f}x bare")
    allp = Counter()
    for c in rec.passes.values():
        allp.update(c)
    print("YOLOX forwards in grade(), all steps: " + ", ".join(
        f"{b} {px} px: {k} images ({k / n:.1f} per image)" for (b, px), k in sorted(allp.items())))


def print_profile(prof: cProfile.Profile) -> None:
    """Top 15 by cumulative time: overall, then among the DB layers' functions."""
    for title, restrict in (("all functions", ()), ("fiftyone / pymongo / bson",
                                                    ("fiftyone|pymongo|bson",))):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(*restrict, 15)
        body = s.getvalue()
        print(f"\n-- cProfile of grade(), top 15 cumulative, {title} --")
        print(body[body.find("   ncalls"):].rstrip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("coco128-val", "coco128", "raccoon"), default="coco128-val")
    ap.add_argument("--images", type=int, default=None, help="first N images only")
    ap.add_argument("--profile", action="store_true",
                    help="grade() under cProfile (its times then include the overhead)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    t_run, c_run = time.perf_counter(), time.process_time()
    srv = H.start_db(always=True)   # always ours: the mongod's CPU is read from its pid
    rec = Recorder(srv.proc.pid if srv is not None and srv.proc is not None else None)
    listen_db(rec)
    try:
        import grader

        ds = H.load(args.data, f"C-grade-speed-{args.data}")
        if args.images:
            ds = ds.limit(args.images).clone(name=f"{ds.name}-{args.images}")
        n, paths = len(ds), ds.values("filepath")
        print(f"== {args.data}: {n} images, {ds.count('ground_truth.detections')} boxes; "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average "
              f"{os.getloadavg()[0]:.1f} at start")

        ref = bare_pass(paths)
        bare = ref["pass"]
        print(f"bare YOLOX-Nano pass: {bare:.1f} s wall ({1e3 * bare / n:.0f} ms/image), CPU "
              f"{ref['pass_cpu']:.1f} s, {ref['boxes']:.0f} boxes; load_detector "
              f"{ref['load']:.2f} s; peak RSS {peak_rss_mib():.0f} MiB")
        # the same pass through cv2.dnn (the runtime before onnxruntime): the older reference
        ref_cv = bare_pass(paths, backend="cv2")
        print(f"bare YOLOX-Nano pass through cv2.dnn: {ref_cv['pass']:.1f} s wall "
              f"({1e3 * ref_cv['pass'] / n:.0f} ms/image), CPU {ref_cv['pass_cpu']:.1f} s")

        # grade() is this process's first user of torch: its import is part of grade()'s time
        torch_import = torch_import_seconds() if "torch" not in sys.modules else None
        times: dict[str, list[float]] = {}
        prof = cProfile.Profile() if args.profile else None
        c0, m0 = time.process_time(), rec.mongod_cpu()
        with instrumented(rec):
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            g = grader.grade(ds, progress=H.timed_progress(times))
            if prof:
                prof.disable()
            t1 = time.perf_counter()
        cpu, mongod = time.process_time() - c0, rec.mongod_cpu() - m0
        wall = t1 - t0
        print(f"grade(): {wall:.1f} s wall = {wall / bare:.2f}x the bare pass ({wall / ref_cv['pass']:.2f}x the cv2.dnn one); ran "
              f"{sorted(g.reports)}; not run {g.not_run}; load average {os.getloadavg()[0]:.1f}")
        print_account(times, t0, t1, n, bare)
        print_steps(rec, n, bare, wall, torch_import)
        n_db = sum(int(d[0]) for d in rec.db.values())
        print(f"\ngrade(): CPU {cpu:.1f} s of this process ({cpu / wall:.2f} cores busy on "
              f"average), mongod CPU {mongod:.1f} s, DB commands {n_db}; whole run: wall "
              f"{time.perf_counter() - t_run:.1f} s, CPU {time.process_time() - c_run:.1f} s; "
              f"peak RSS {peak_rss_mib():.0f} MiB")
        if prof:
            print_profile(prof)
        H.write_json(args.json, {
            "data": args.data, "images": n, "bare_s": bare, "grade_s": wall, "grade_cpu_s": cpu,
            "mongod_cpu_s": mongod, "peak_rss_mib": peak_rss_mib(),
            "progress_account": H.step_account(times, t0, t1),
            "steps": {k: {"wall": v[0], "cpu": v[1], "mongod_cpu": v[2],
                          "db_cmds": rec.db[k][0], "db_s": rec.db[k][1],
                          "yolox": {f"{b}:{px}": c for (b, px), c in rec.passes[k].items()}}
                      for k, v in rec.runs.items()}})
    finally:
        if srv is not None:
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
