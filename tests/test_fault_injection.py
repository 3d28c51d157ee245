"""Fault injection (issue 9): output-field guards, redaction, kills mid-write, concurrent fixes,
dead/hanging endpoints, bad keys and bad parameters — each asserting nothing is lost, mixed or leaked."""
from __future__ import annotations

import fiftyone as fo
import pytest

from grader.fields import claim_output_field, field_owner, guard_output_field
from grader.redact import redact


# ---------------------------------------------------------------- output-field guard

def test_guard_output_field_rules(synthetic_dataset):
    ds = synthetic_dataset
    # never the field being judged, even with overwrite=True
    with pytest.raises(ValueError, match="also an input"):
        guard_output_field(ds, "ground_truth", inputs=["ground_truth"], overwrite=True)
    # an existing user field with values: refused unless overwrite=True
    with pytest.raises(ValueError, match="overwrite=True"):
        guard_output_field(ds, "predictions", owner="detector")
    guard_output_field(ds, "predictions", overwrite=True)
    # a field of another type: refused even with overwrite=True
    ds.add_sample_field("a_number", fo.FloatField)
    with pytest.raises(ValueError, match="type FloatField"):
        guard_output_field(ds, "a_number", overwrite=True)
    guard_output_field(ds, "a_number", kind=fo.FloatField)  # same type, empty: fine
    # missing field: fine; after claiming, the same owner may rewrite, another may not
    guard_output_field(ds, "lg_new")
    claim_output_field(ds, "lg_new", owner="cleanlab")
    assert field_owner(ds, "lg_new") == "cleanlab"
    ds.set_values("lg_new", [fo.Detections(detections=[fo.Detection(label="x")])] * len(ds))
    guard_output_field(ds, "lg_new", owner="cleanlab")
    with pytest.raises(ValueError, match="created by 'cleanlab'"):
        guard_output_field(ds, "lg_new", owner="detector")
    assert ds.count("ground_truth.detections") == 18  # nothing was written by the guard


def test_redact_masks_every_credential_shape():
    key = "sk-live-0123456789abcdef\n"
    texts = [
        f"InvalidHeader: Invalid return character or leading space in header: Authorization {('Bearer ' + key)!r}",
        '{"error": {"echo": {"Authorization": "Bearer hunter2hunter2"}}}',
        "GET /v1?api_key=hunter2hunter2&model=x",
        '{"api_key": "hunter2hunter2"}',
        "x-api-key: hunter2hunter2",
        f"raw key {key}",
    ]
    for t in texts:
        out = redact(t, [key])
        assert "hunter2hunter2" not in out and "0123456789abcdef" not in out, out
        assert "[REDACTED]" in out
    assert redact("nothing secret here: max_tokens=64") == "nothing secret here: max_tokens=64"
    assert redact("my custom key abcd-efgh", ["abcd-efgh"]) == "my custom key [REDACTED]"


# ---------------------------------------------------------------- helpers: subprocess workers

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from bson import ObjectId  # noqa: E402

from grader import review  # noqa: E402
from grader.review.fixes import FAULT_ENV, label_state  # noqa: E402
from grader.scores import REVIEWED_OK_TAG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["cat", "dog", "bird", "fish"]


def _spawn(code: str, env_extra: dict | None = None) -> subprocess.Popen:
    """A Python subprocess on the test session's database (FIFTYONE_DATABASE_URI is inherited)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), FIFTYONE_DO_NOT_TRACK="true",
               FIFTYONE_DATABASE_VALIDATION="false")
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=str(REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _make_dataset(name: str, n_samples: int, per_sample: int, masks: bool = False) -> fo.Dataset:
    rng = np.random.default_rng(0)
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name)
    samples = []
    for i in range(n_samples):
        dets = []
        for j in range(per_sample):
            d = fo.Detection(label=CLASSES[j % len(CLASSES)],
                             bounding_box=[0.1 * j / per_sample, 0.1, 0.2, 0.3], order=j)
            if masks:
                d.mask = rng.uniform(size=(5, 7)) > 0.5
                d.score = float("nan")
            dets.append(d)
        samples.append(fo.Sample(filepath=f"/tmp/lg-fault-{name}-{i}.jpg",
                                 ground_truth=fo.Detections(detections=dets)))
    ds.add_samples(samples, progress=False)
    ds.default_classes = CLASSES
    ds.persistent = True  # the workers open it by name
    ds.save()
    return ds


def _raw_labels(ds, field="ground_truth") -> dict:
    out = {}
    for doc in ds._sample_collection.find({}, {field: 1}):
        out[doc["_id"]] = (doc.get(field) or {}).get("detections") or []
    return out


# ---------------------------------------------------------------- concurrent fixes

_WORKER = """
import json, random, sys
import fiftyone as fo
from grader import review
ds = fo.load_dataset({name!r})
rng = random.Random({seed})
classes = {classes!r}
pairs = [(s, l) for s, ls in zip(*ds.values(["id", "ground_truth.detections.id"])) for l in ls]
stats = dict(applied=0, conflicts=0, deleted=0, undone=0)
for k in range({n}):
    sid, lid = rng.choice(pairs)
    try:
        if {deleter} and k % 5 == 0:
            rec = review.delete_label(ds, sid, lid)
            stats["deleted"] += 1
            review.undo_fix(ds, rec.fix_id)  # puts it back by id, at its former place
            stats["undone"] += 1
        elif k % 7 == 0:
            review.accept_label(ds, sid, lid)
        else:
            review.relabel(ds, sid, lid, new_label=rng.choice(classes))
        stats["applied"] += 1
    except review.FixConflictError:
        stats["conflicts"] += 1
    except KeyError:  # the label is deleted by the other worker right now
        stats["conflicts"] += 1
print(json.dumps(stats))
"""


def _edges_form_a_path(edges: list[tuple[str, str]], start: str, end: str) -> bool:
    """Whether the (before -> after) state transitions chain from ``start`` to ``end`` (each used once)."""
    from collections import Counter
    out_d, in_d = Counter(a for a, _ in edges), Counter(b for _, b in edges)
    nodes = set(out_d) | set(in_d) | {start, end}
    for v in nodes:
        bal = out_d[v] - in_d[v]
        want = (1 if v == start else 0) - (1 if v == end else 0)
        if bal != want:
            return False
    return True


def test_two_processes_fixing_the_same_samples_and_labels_lose_nothing():
    """2 processes x 500 fixes on 2 samples x 4 labels: same sample and same label races,
    deletes + undos shifting positions. Afterwards every label is checked against the log."""
    name = "lg-fault-concurrent"
    ds = _make_dataset(name, n_samples=2, per_sample=4)
    review.clear_fix_log(ds)
    initial = {l["_id"]: l for ls in _raw_labels(ds).values() for l in ls}
    n = 500
    procs = [_spawn(_WORKER.format(name=name, seed=s, classes=CLASSES, n=n, deleter=(s == 1)))
             for s in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    stats = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    attempts = 2 * n
    assert sum(s["applied"] + s["conflicts"] for s in stats) == attempts

    final = _raw_labels(ds)
    flat = [l for ls in final.values() for l in ls]
    ids = [l["_id"] for l in flat]
    assert len(ids) == len(set(ids)), "duplicate label ids"
    assert set(ids) == set(initial), "phantom or lost labels"
    for sid, ls in final.items():  # order restored by the id-based undo of deletes
        assert [l["order"] for l in ls] == sorted(l["order"] for l in ls)
    records = [r for r in review.fix_log(ds) if r.state == "done"]
    assert not review.pending_fixes(ds)
    corrupted = 0
    for lid, cur in ((l["_id"], l) for l in flat):
        ini = initial[lid]
        # only class and tags may change: box, order, id untouched
        if cur["bounding_box"] != ini["bounding_box"] or cur["order"] != ini["order"]:
            corrupted += 1
            continue
        recs = [r for r in records if r.label_id == str(lid) and r.kind in ("accept", "relabel")]
        edges = [(label_state(r.before), label_state(r.after)) for r in recs]
        if not _edges_form_a_path(edges, label_state(ini), label_state(cur)):
            corrupted += 1
    deletes = [r for r in records if r.kind == "delete"]
    assert all(r.undone for r in deletes) and len(deletes) == stats[1]["deleted"]
    applied = sum(s["applied"] for s in stats)
    print(f"\nconcurrent fixes: {attempts} attempts, {applied} applied, "
          f"{sum(s['conflicts'] for s in stats)} reported conflicts, {len(deletes)} delete+undo, "
          f"corrupted={corrupted}")
    assert corrupted == 0
    assert len([r for r in records if r.kind in ("accept", "relabel")]) + len(deletes) == applied
    fo.delete_dataset(name)


# ---------------------------------------------------------------- SIGKILL at each write phase

def _run_killed(phase: str, fn) -> int:
    """Run ``fn`` in a forked child (cheap: fiftyone is already imported) that SIGKILLs itself at
    ``phase``; returns the child's wait status. pymongo resets its pools in a forked child."""
    import warnings
    pid = os.fork()
    if pid == 0:  # child
        try:
            warnings.simplefilter("ignore")
            os.environ[FAULT_ENV] = phase
            fn()
        finally:
            os._exit(0)  # reached only if the fault point did not fire
    _, status = os.waitpid(pid, 0)
    return status


def _killed_action(kind, ds, sid, lid):
    if kind == "relabel":
        return lambda: review.relabel(ds, sid, lid, new_label="fish")
    if kind == "delete":
        return lambda: review.delete_label(ds, sid, lid)
    if kind in ("bulk", "bulk_rollback"):
        return lambda: review.accept_labels(ds, "ground_truth", chunk_size=4)
    return lambda: review.undo_fix(ds)


_PHASES = [("relabel", "fix:logged"), ("relabel", "fix:applied"), ("delete", "delete:logged"),
           ("delete", "delete:applied"), ("bulk", "bulk:logged"), ("bulk", "bulk:chunk"),
           ("bulk", "bulk:applied"), ("bulk_rollback", "bulk:chunk"), ("undo", "undo:marked"),
           ("undo", "undo:applied")]


def test_sigkill_during_each_write_phase_is_visible_and_recoverable():
    dsets = {}
    for kind, phase in _PHASES:
        name = f"lg-fault-kill-{kind}-{phase.replace(':', '-')}"
        ds = _make_dataset(name, n_samples=3, per_sample=4, masks=(kind == "undo"))
        review.clear_fix_log(ds)
        sid = ds.first().id
        lid = ds.first().ground_truth.detections[1].id
        if kind == "undo":
            review.relabel(ds, sid, lid, new_label="fish")
        snap = _raw_labels(ds)
        dsets[(kind, phase)] = (ds, sid, lid, snap, kind)
        status = _run_killed(phase, _killed_action(kind, ds, sid, lid))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (phase, status)
    for (_, phase), (ds, sid, lid, snap, kind) in dsets.items():
        pend = review.pending_fixes(ds)
        assert len(pend) == 1, phase  # the interrupted operation is visible
        if kind == "bulk_rollback":
            assert pend[0].extra["chunks_done"] == 1  # killed after the first chunk of 4 labels
            assert review.recover_fixes(ds, resume_bulk=False)[0][1] == "rolled back"
            assert _raw_labels(ds) == snap and review.fix_log(ds) == []
            fo.delete_dataset(ds.name)
            continue
        outcome = review.recover_fixes(ds)
        assert len(outcome) == 1 and not review.pending_fixes(ds), phase
        labels = _raw_labels(ds)
        cur = {l["_id"]: l for l in labels[ObjectId(sid)]}
        if kind == "relabel":
            applied = cur[ObjectId(lid)]["label"] == "fish"
            assert applied == (phase == "fix:applied"), phase
            assert [r.kind for r in review.fix_log(ds)] == (["relabel"] if applied else [])
        elif kind == "delete":
            applied = ObjectId(lid) not in cur
            assert applied == (phase == "delete:applied"), phase
        elif kind == "bulk":
            assert outcome[0][1] == "resumed"
            tags = [t for ls in labels.values() for l in ls for t in l.get("tags", [])]
            assert tags.count(REVIEWED_OK_TAG) == 12, phase
        elif kind == "undo":
            rec = review.fix_log(ds)[0]
            assert rec.undone == (phase == "undo:applied"), phase
            if rec.undone:  # the masked (NaN-scored) label is back exactly (NaN != NaN: compare states)
                want = _orig_before(rec, snap)
                assert {s: [label_state(l) for l in ls] for s, ls in labels.items()} == \
                    {s: [label_state(l) for l in ls] for s, ls in want.items()}
                back = next(l for l in labels[ObjectId(sid)] if l["_id"] == ObjectId(lid))
                assert isinstance(back["mask"], bytes) and back["mask"] == rec.before["mask"]
        # whatever happened, everything settled can be undone back to the snapshot
        while review.count_fixes(ds):
            review.undo_fix(ds)
        if kind != "undo":
            assert _raw_labels(ds) == snap, phase
        fo.delete_dataset(ds.name)


def _orig_before(rec, snap):
    """``snap`` with the fixed label replaced by the record's ``before``."""
    out = {}
    for s, ls in snap.items():
        out[s] = [rec.before if l["_id"] == ObjectId(rec.label_id) else l for l in ls]
    return out


# ---------------------------------------------------------------- review: bad parameters, stale state

def test_expected_state_masks_nan_and_bad_fix_parameters():
    ds = _make_dataset("lg-fault-params", n_samples=2, per_sample=3, masks=True)
    review.clear_fix_log(ds)
    s = ds.first()
    sid, det = s.id, s.ground_truth.detections[0]
    lid = det.id
    raw = _raw_labels(ds)[ObjectId(sid)][0]
    # the token is the same from the App's Detection and from the raw document (mask, NaN)
    token = review.label_state(det)
    assert token == review.label_state(raw)
    snap = _raw_labels(ds)
    # bad parameters: refused before any write
    bad = [
        (lambda: review.relabel(ds, sid, lid, new_label="zebra"), ValueError, "allow_new_class"),
        (lambda: review.replace_box(ds, sid, lid, box=[0.1, 0.1, 0.2]), ValueError, "4 numbers"),
        (lambda: review.replace_box(ds, sid, lid, box=[0.1, float("nan"), 0.2, 0.2]), ValueError,
         "non-finite"),
        (lambda: review.replace_box(ds, sid, lid, box=[0.9, 0.1, 0.5, 0.2]), ValueError, "inside"),
        (lambda: review.accept_label(ds, "not-an-id", lid), ValueError, "24-hex-digit"),
        (lambda: review.accept_labels(ds, "ground_truth", chunk_size=0), ValueError, "chunk_size"),
    ]
    for fn, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            fn()
    states = lambda d: {s: [label_state(l) for l in ls] for s, ls in d.items()}  # noqa: E731
    assert states(_raw_labels(ds)) == states(snap)
    assert review.fix_log(ds) == []
    # a stale token: the label changed since the panel showed it -> conflict, nothing written
    review.relabel(ds, sid, lid, new_label="dog")
    with pytest.raises(review.FixConflictError, match="changed since"):
        review.accept_label(ds, sid, lid, expected_state=token)
    fresh = review.label_state(ds[sid].ground_truth.detections[0])
    review.accept_label(ds, sid, lid, expected_state=fresh)
    # undo of masked + NaN labels: no false conflict, byte-exact mask back
    review.undo_fix(ds)
    review.undo_fix(ds)
    back = _raw_labels(ds)[ObjectId(sid)][0]
    assert back["mask"] == raw["mask"] and label_state(back) == label_state(raw)
    # relabel + delete + undo in a masked dataset
    r = review.delete_label(ds, sid, lid)
    review.undo_fix(ds, r.fix_id)
    assert [l["_id"] for l in _raw_labels(ds)[ObjectId(sid)]][0] == ObjectId(lid)
    fo.delete_dataset(ds.name)


def test_a_race_after_the_shown_state_was_checked_is_refused_not_reapplied(synthetic_dataset,
                                                                           monkeypatch):
    """Another process edits the label between our read and our write: with a shown state the
    fix is refused (FixConflictError), nothing is written and no pending record is left."""
    from grader.review import fixes

    ds = synthetic_dataset
    det = ds.first().ground_truth.detections[0]
    sid, lid, shown = ds.first().id, det.id, label_state(det)
    real_read = fixes._read
    races = []

    def read_then_race(dataset, sample_id, fields):
        doc = real_read(dataset, sample_id, fields)
        # the other curator's relabel lands right after our read
        races.append(1)
        ds._sample_collection.update_one(
            {"_id": ObjectId(sid)},
            {"$set": {"ground_truth.detections.$[d].label": f"raced{len(races)}"}},
            array_filters=[{"d._id": ObjectId(lid)}])
        return doc

    monkeypatch.setattr(fixes, "_read", read_then_race)
    with pytest.raises(review.FixConflictError, match="changed since it was shown"):
        review.accept_label(ds, sid, lid, expected_state=shown)
    # a delete decided on the (new) shown state: the same refusal, the label stays
    ds.reload()
    shown = label_state(next(d for d in ds[sid].ground_truth.detections if d.id == lid))
    with pytest.raises(review.FixConflictError, match="changed since it was shown; delete"):
        review.delete_label(ds, sid, lid, expected_state=shown)
    monkeypatch.undo()
    ds.reload()
    label = next(d for d in ds[sid].ground_truth.detections if d.id == lid)
    assert label.label == "raced2" and REVIEWED_OK_TAG not in (label.tags or [])
    assert review.fix_log(ds) == [] and review.pending_fixes(ds) == []


def test_undo_last_skips_a_fix_whose_sample_was_deleted():
    ds = _make_dataset("lg-fault-undo-deleted", n_samples=2, per_sample=2)
    review.clear_fix_log(ds)
    s0, s1 = list(ds)
    r0 = review.relabel(ds, s0.id, s0.ground_truth.detections[0].id, new_label="fish")
    r1 = review.relabel(ds, s1.id, s1.ground_truth.detections[0].id, new_label="fish")
    ds.delete_samples([s1.id])
    with pytest.raises(LookupError, match="was deleted"):
        review.undo_fix(ds, r1.fix_id)
    rec = review.undo_fix(ds)  # newest undoable: r0
    assert rec.fix_id == r0.fix_id
    with pytest.raises(LookupError, match="no fix to undo"):
        review.undo_fix(ds)
    fo.delete_dataset(ds.name)


# ---------------------------------------------------------------- VLM endpoint faults and secrets

import socket  # noqa: E402
import time  # noqa: E402

from fake_openai_server import FakeOpenAIServer, Override  # noqa: E402
from grader.judges.vlm import run_vlm_judge  # noqa: E402
from grader.judges.vlm.backends import VLMBackendError  # noqa: E402
from grader.judges.vlm.openai_http import OpenAIBackend, VLMEndpointDown  # noqa: E402

KEY = "sk-fault-5e4d3c2b1a0f"


def _verdicts(ds):
    return ds.values("ground_truth.detections.vlm_verdict"), ds.values(
        "ground_truth.detections.tags")


def _judged(ds, srv, **kw):
    b = OpenAIBackend("fake-vlm", base_url=srv.base_url, backoff=0.01, **kw)
    return run_vlm_judge(ds, b, cache=False, threshold=0.5)


def test_dead_and_hanging_endpoints_fail_fast_and_keep_earlier_verdicts(synthetic_dataset, capsys):
    ds = synthetic_dataset
    with FakeOpenAIServer() as srv:
        _judged(ds, srv)
    before = _verdicts(ds)
    assert ds.count("ground_truth.detections.vlm_verdict") == 18

    with socket.socket() as s:  # a port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    t = time.perf_counter()
    with pytest.raises(VLMEndpointDown, match=r"no answer to \d+ requests in a row"):
        run_vlm_judge(ds, OpenAIBackend("m", base_url=dead, backoff=0.01), cache=False)
    assert time.perf_counter() - t < 15
    assert _verdicts(ds) == before  # nothing wiped

    hang = socket.socket()  # accepts connections (kernel backlog) but never answers
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    try:
        url = f"http://127.0.0.1:{hang.getsockname()[1]}/v1"
        t = time.perf_counter()
        with pytest.raises(VLMEndpointDown, match="timed out"):
            run_vlm_judge(ds, OpenAIBackend("m", base_url=url, timeout=0.5, backoff=0.01),
                          cache=False)
        assert time.perf_counter() - t < 15
        assert _verdicts(ds) == before
        # the CLI: one line, exit status 2, no traceback
        from grader.cli import main
        rc = main(["vlm-judge", "--dataset", ds.name, "--model", "m", "--base-url", dead,
                   "--no-cache", "--max-retries", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("label-grader: error:") and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    finally:
        hang.close()
    assert _verdicts(ds) == before


def test_keys_with_whitespace_and_echoed_headers_never_leak(synthetic_dataset, monkeypatch, caplog):
    ds = synthetic_dataset
    # a trailing newline (env files) is stripped and the key works
    monkeypatch.setenv("LG_FAULT_KEY", KEY + "\n")
    with FakeOpenAIServer(required_key=KEY) as srv:
        b = OpenAIBackend("fake-vlm", base_url=srv.base_url, api_key_env="LG_FAULT_KEY")
        rep = run_vlm_judge(ds, b, cache=False)
        assert rep.labels_scored == 18 and set(srv.state.auth_headers) == {f"Bearer {KEY}"}
    # a newline or control character inside: a clear error that does not contain the key
    for bad in ("sk-abc\ndef123456", "sk-abc\x00def123456", "sk-abc def123456", "sk-abc\x7fdef123456"):
        if "\x00" not in bad:  # environment variables cannot hold NUL
            monkeypatch.setenv("LG_FAULT_KEY", bad)
            with pytest.raises(VLMBackendError) as ei:
                OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env="LG_FAULT_KEY")
            assert "def123456" not in str(ei.value) and "whitespace or control" in str(ei.value)
        with pytest.raises(VLMBackendError) as ei:
            OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key=bad)
        assert "def123456" not in str(ei.value) and "whitespace or control" in str(ei.value)
    # a 4xx body echoing the Authorization header: the stored error is redacted, and the one
    # label it failed for keeps its earlier verdict
    monkeypatch.setenv("LG_FAULT_KEY", KEY)
    before = ds.values("ground_truth.detections.vlm_verdict")
    echo = json.dumps({"error": {"message": "bad request", "headers": {"Authorization": f"Bearer {KEY}"}}})
    with FakeOpenAIServer(required_key=KEY) as srv:
        srv.state.overrides.append(Override(status=418, body=echo))
        b = OpenAIBackend("fake-vlm", base_url=srv.base_url, api_key_env="LG_FAULT_KEY",
                          concurrency=1)
        rep = run_vlm_judge(ds, b, cache=False, run_key="vlm_fault")
    assert rep.skipped["backend_error"] == 1 and rep.labels_scored == 17
    assert ds.values("ground_truth.detections.vlm_verdict") == before
    stored = str(ds.get_run_info("vlm_fault").serialize()) + str(rep.to_dict())
    assert KEY not in stored and "418" in stored
    assert KEY not in caplog.text


def test_cli_errors_are_one_line_and_exit_2(synthetic_dataset, capsys):
    from grader.cli import main

    ds = synthetic_dataset
    ds.persistent = True
    review.clear_fix_log(ds)
    for argv, msg in [(["save-views", "--dataset", ds.name, "--gt-field", "nope"], "does not exist"),
                      (["undo", "--dataset", ds.name], "no fix to undo"),
                      (["undo", "--dataset", ds.name, "--fix-id", "abc"], "no fix 'abc'"),
                      (["fix-log", "--dataset", "no-such-dataset-A"], "not found")]:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2, (argv, err)
        assert err.startswith("label-grader: error:") and msg in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert main(["save-views", "--dataset", ds.name]) == 0
    with pytest.raises(ValueError):
        main(["--debug", "save-views", "--dataset", ds.name, "--gt-field", "nope"])


def test_vlm_sample_fields_never_overwrite_a_user_field(synthetic_dataset):
    ds = synthetic_dataset
    ds.set_values("vlm_sample_reason", ["my notes"] * len(ds))
    with FakeOpenAIServer() as srv:
        b = OpenAIBackend("fake-vlm", base_url=srv.base_url, backoff=0.01)
        with pytest.raises(ValueError, match="overwrite=True"):
            run_vlm_judge(ds, b, mode="both", cache=False)
        assert srv.state.requests == 0 and ds.count("ground_truth.detections.vlm_verdict") == 0
        assert ds.values("vlm_sample_reason") == ["my notes"] * len(ds)
        run_vlm_judge(ds, b, mode="samples", cache=False, overwrite=True)
        run_vlm_judge(ds, b, mode="samples", cache=False)  # now ours: re-runs need no overwrite
    assert "my notes" not in ds.values("vlm_sample_reason")


def test_operator_error_never_carries_the_key(synthetic_dataset, monkeypatch):
    import fiftyone.operators as foo

    bad = "sk-opfault\n" + "zz9y8x7w6v"  # a newline inside: no HTTP header can carry it
    monkeypatch.setenv("LABEL_GRADER_VLM_API_KEY", bad)
    with pytest.raises(Exception) as ei:
        foo.execute_operator("@label-grader/label-grader/run_vlm_judge", ctx={
            "view": synthetic_dataset.view(), "params": {
                "target": "DATASET", "label_field": "ground_truth", "backend": "openai",
                "base_url": "http://127.0.0.1:9/v1", "model": "m",
                "api_key_secret_name": "LABEL_GRADER_VLM_API_KEY", "use_cache": False}})
    text = str(ei.value)
    assert "whitespace or control" in text and "zz9y8x7w6v" not in text and "opfault" not in text
    assert synthetic_dataset.count("ground_truth.detections.vlm_verdict") == 0
