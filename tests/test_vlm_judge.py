"""The VLM judge end to end: rendering -> backend -> parse -> fields/tags, cache, bad input,
local tiny transformers model, and the App/SDK operator."""
from __future__ import annotations

import os
import time

import fiftyone.operators as foo
import pytest

from fake_openai_server import FakeOpenAIServer, Override
from grader.scores import get_spec
from grader.judges.vlm import VLMCache, make_backend, run_vlm_judge
from grader.judges.vlm.local import TransformersBackend
from tiny_vlm import build_tiny_vlm, steer

KEY = "sk-judge-test-0a1b2c3d4e"
OP = "@label-grader/label-grader/run_vlm_judge"


def _http(srv, **kw):
    kw.setdefault("backoff", 0.01)
    return make_backend("openai", "fake-vlm", base_url=srv.base_url, **kw)


def _gt(ds, attr):
    return ds.values(f"ground_truth.detections.{attr}", unwind=True)


def test_http_judge_writes_fields_and_tags(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    before = ds.values("ground_truth.detections.bounding_box", unwind=True)
    with FakeOpenAIServer(answer_prob=0.9) as srv:
        report = run_vlm_judge(ds, _http(srv), cache=tmp_path / "c", prompt="yesno")
    labels = _gt(ds, "label")
    verdicts, confs = _gt(ds, "vlm_verdict"), _gt(ds, "vlm_confidence")
    assert verdicts == ["yes" if l == "cat" else "no" for l in labels]
    assert confs == [pytest.approx(0.9 if l == "cat" else 0.1) for l in labels]
    assert all(r.startswith("the object in the box") for r, l in zip(_gt(ds, "vlm_reason"), labels)
               if l == "dog")
    # tags exactly on the labels the model rejected; user data untouched
    tagged = ds.select_labels(tags="suspect:vlm").values("ground_truth.detections.label", unwind=True)
    assert sorted(tagged) == sorted(l for l in labels if l == "dog")
    assert ds.values("ground_truth.detections.bounding_box", unwind=True) == before
    assert _gt(ds, "label") == labels
    assert report.labels_scored == 18 and report.info["model_calls"] == 18
    assert srv.state.image_sizes[0] == (384, 384)  # rendered crops, not the raw image
    assert sum('"cat"' in p for p in srv.state.prompts) == labels.count("cat")
    assert get_spec("vlm_confidence").tag == "suspect:vlm"


def test_per_sample_mode(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    first = ds.first()
    reply = lambda p: "no - box 1 is not a dog" if p.count("dog") >= 2 else "yes"
    with FakeOpenAIServer(reply=reply, logprobs=False) as srv:
        report = run_vlm_judge(ds, _http(srv), mode="samples", cache=False)
    assert srv.state.requests == len(ds)
    # overlays are the full image plus a legend strip
    w, h = first.metadata.width, first.metadata.height
    assert all(s[1] == h and s[0] > w for s in srv.state.image_sizes)
    assert all("0: " in p and "2: " in p for p in srv.state.prompts)
    n_dog = [ls.count("dog") for ls in ds.values("ground_truth.detections.label")]
    expect = ["no" if n >= 2 else "yes" for n in n_dog]
    assert ds.values("vlm_sample_verdict") == expect
    assert ds.values("vlm_sample_confidence") == [0.1 if e == "no" else 0.9 for e in expect]
    assert ds.match_tags("suspect:vlm").count() == expect.count("no")
    assert not ds.has_sample_field("vlm_verdict")
    assert report.info["samples_judged"] == len(ds)


def test_cache_rerun_and_interrupted_run_do_not_pay_twice(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    cache = VLMCache(tmp_path / "cache")
    with FakeOpenAIServer() as srv:
        backend = _http(srv, concurrency=2)

        class Interrupting:
            """Delegates to the HTTP backend and dies (like Ctrl-C) after 7 answers."""
            model_id = backend.model_id
            describe = backend.describe

            def stream(self, reqs):
                for n, item in enumerate(backend.stream(reqs)):
                    if n == 7:
                        raise KeyboardInterrupt
                    yield item

        with pytest.raises(KeyboardInterrupt):
            run_vlm_judge(ds, Interrupting(), cache=cache)
        paid = len(cache)
        assert paid == 7
        # Requests already in flight when the run died may still reach the server: let them
        # land before counting what the re-run sends.
        settle_deadline, last = time.monotonic() + 5, -1
        while srv.state.requests != last and time.monotonic() < settle_deadline:
            last = srv.state.requests
            time.sleep(0.3)
        sent_before = srv.state.requests
        report = run_vlm_judge(ds, backend, cache=cache)
        assert srv.state.requests - sent_before == 18 - paid
        assert report.info["cache_hits"] == paid
        first = _gt(ds, "vlm_verdict")
        # a full re-run is free and gives the same fields
        sent_before = srv.state.requests
        report = run_vlm_judge(ds, backend, cache=cache)
        assert srv.state.requests == sent_before and report.info["cache_hits"] == 18
        assert _gt(ds, "vlm_verdict") == first
        # a different prompt, or an edited image, is a miss
        run_vlm_judge(ds, backend, cache=cache, prompt="yesno")
        assert srv.state.requests == sent_before + 18
        fp = ds.first().filepath
        st = os.stat(fp)
        os.utime(fp, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        sent_before = srv.state.requests
        run_vlm_judge(ds, backend, cache=cache)
        assert srv.state.requests - sent_before == len(ds.first().ground_truth.detections)


def test_bad_input_is_counted_and_stale_values_reset(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    with FakeOpenAIServer() as srv:
        backend = _http(srv)
        run_vlm_judge(ds, backend, cache=False)
        samples = list(ds)
        os.remove(samples[0].filepath)                      # missing image (3 labels)
        with open(samples[1].filepath, "wb") as f:           # corrupt image (3 labels)
            f.write(b"not a jpeg")
        s2 = samples[2]
        s2.ground_truth.detections[0].bounding_box = [1.5, 1.5, 0.1, 0.1]   # degenerate
        s2.save()
        s3 = samples[3]
        s3.ground_truth = None                               # no labels at all
        s3.save()
        report = run_vlm_judge(ds, backend, cache=False, mode="both")
    assert report.skipped["unreadable_image"] == 6
    assert report.skipped["degenerate_box"] == 1
    assert report.skipped["sample_unreadable_image"] == 2
    assert report.labels_scored == 18 - 3 - 3 - 3 - 1  # s3's labels are gone
    # labels that could not be judged this time carry no stale verdict from the first run
    for s in (samples[0], samples[1]):
        assert all(d.get_field("vlm_verdict") is None for d in ds[s.id].ground_truth.detections)
    assert ds[s2.id].ground_truth.detections[0].get_field("vlm_verdict") is None
    assert ds[s3.id].vlm_sample_verdict is not None  # an image without boxes is still judged


def test_unparsed_answers_are_counted_not_yes(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    with FakeOpenAIServer(reply=lambda p: "I'm sorry, I cannot tell." if '"dog"' in p else "Yes",
                          logprobs=False) as srv:
        report = run_vlm_judge(ds, _http(srv), cache=False, threshold=0.95)
    labels = _gt(ds, "label")
    n_dog = labels.count("dog")
    assert report.skipped["unparsed_answer"] == n_dog and report.labels_scored == 18 - n_dog
    assert _gt(ds, "vlm_verdict") == ["unparsed" if l == "dog" else "yes" for l in labels]
    assert all(c is None for c, l in zip(_gt(ds, "vlm_confidence"), labels) if l == "dog")
    # text "Yes" gives 0.9 < 0.95: tagged; unparsed: not tagged
    assert ds.count_label_tags()["suspect:vlm"] == 18 - n_dog


def test_backend_errors_are_counted(synthetic_dataset):
    ds = synthetic_dataset
    with FakeOpenAIServer() as srv:
        srv.state.overrides.extend([Override(500)] * 2)
        report = run_vlm_judge(ds, _http(srv, max_retries=0, concurrency=1), cache=False)
    assert report.skipped["backend_error"] == 2 and report.labels_scored == 16
    assert sum(v is None for v in _gt(ds, "vlm_verdict")) == 2


def test_key_never_stored(synthetic_dataset, tmp_path, monkeypatch, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    ds = synthetic_dataset
    monkeypatch.setenv("JUDGE_KEY_VAR", KEY)
    with FakeOpenAIServer(required_key=KEY) as srv:
        run_vlm_judge(ds, _http(srv, api_key_env="JUDGE_KEY_VAR"), cache=tmp_path / "c",
                      mode="both")
    assert set(srv.state.auth_headers) == {f"Bearer {KEY}"}
    dump = str(ds.to_dict()) + str(ds.get_run_info("vlm_judge").serialize())
    assert KEY not in dump and "JUDGE_KEY_VAR" not in str(ds.to_dict()["samples"])
    assert KEY.encode() not in (tmp_path / "c" / "vlm_cache.sqlite").read_bytes()
    assert KEY not in caplog.text


# ----------------------------------------------------------------------------------------------
# Local transformers backend with a tiny random-weight LLaVA (no download)

@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm") / "model")


def test_local_tiny_vlm_end_to_end(synthetic_dataset, tiny_vlm_dir, tmp_path):
    ds = synthetic_dataset
    backend = make_backend("transformers", str(tiny_vlm_dir), device="cpu", batch_size=4,
                           max_new_tokens=6)
    report = run_vlm_judge(ds, backend, mode="both", cache=tmp_path / "c", out_size=64)
    verdicts = _gt(ds, "vlm_verdict")
    assert len(verdicts) == 18 and set(verdicts) <= {"yes", "no", "unparsed"}
    assert report.skipped.get("unparsed_answer", 0) == verdicts.count("unparsed")
    assert report.labels_scored + verdicts.count("unparsed") == 18
    assert all(v in {"yes", "no", "unparsed"} for v in ds.values("vlm_sample_verdict"))
    assert report.info["model_calls"] == 18 + len(ds)
    # the run record holds the local model path, for reproducibility
    assert ds.get_run_info("vlm_judge").config.backend_config["model"] == str(tiny_vlm_dir)


def test_local_steered_tiny_vlm_gives_exact_fields(synthetic_dataset, tiny_vlm_dir):
    ds = synthetic_dataset
    backend = TransformersBackend(str(tiny_vlm_dir), device="cpu", batch_size=5, max_new_tokens=3)
    steer(backend.net, backend.tokenizer, "no", p_yes=0.3)
    report = run_vlm_judge(ds, backend, cache=False, threshold=0.5)
    assert set(_gt(ds, "vlm_verdict")) == {"no"}
    assert _gt(ds, "vlm_confidence") == [pytest.approx(0.3, abs=1e-4)] * 18
    assert ds.count_label_tags() == {"suspect:vlm": 18} and report.labels_scored == 18
    steer(backend.net, backend.tokenizer, "yes", p_yes=0.8)
    run_vlm_judge(ds, backend, cache=False, threshold=0.5)
    assert set(_gt(ds, "vlm_verdict")) == {"yes"}
    assert _gt(ds, "vlm_confidence") == [pytest.approx(0.8, abs=1e-4)] * 18
    assert ds.count_label_tags() == {}  # the re-run removed its own earlier tags


def test_missing_local_model_is_a_clear_error(tmp_path):
    from grader.judges.vlm import VLMBackendError

    with pytest.raises(VLMBackendError, match="local directory"):
        make_backend("transformers", str(tmp_path / "no-model-here"))


# ----------------------------------------------------------------------------------------------
# Operator (App / SDK)

def test_operator_with_http_backend_and_secret(synthetic_dataset, tmp_path, monkeypatch):
    ds = synthetic_dataset
    monkeypatch.setenv("LABEL_GRADER_VLM_API_KEY", KEY)
    with FakeOpenAIServer(required_key=KEY) as srv:
        res = foo.execute_operator(OP, ctx={"view": ds.view(), "params": {
            "target": "DATASET", "label_field": "ground_truth", "backend": "openai",
            "base_url": srv.base_url, "model": "fake-vlm",
            "api_key_secret_name": "LABEL_GRADER_VLM_API_KEY", "concurrency": 3,
            "mode": "detections", "prompt": "stepwise", "threshold": 0.5,
            "cache_dir": str(tmp_path / "c"), "run_key": "vlm_op"}})
    assert res.error is None, res.error
    assert res.result["labels_scored"] == 18
    assert set(srv.state.auth_headers) == {f"Bearer {KEY}"}
    assert ds.count("ground_truth.detections.vlm_verdict") == 18
    info = ds.get_run_info("vlm_op").serialize()
    assert KEY not in str(info) and KEY not in str(res.result)


def test_operator_custom_prompt_and_local_backend(synthetic_dataset, tiny_vlm_dir):
    ds = synthetic_dataset
    res = foo.execute_operator(OP, ctx={"view": ds.view(), "params": {
        "target": "DATASET", "label_field": "ground_truth", "backend": "transformers",
        "model": str(tiny_vlm_dir), "device": "cpu", "batch_size": 6, "max_new_tokens": 3,
        "mode": "detections", "prompt": "custom",
        "custom_prompt": "is this a {label} ? yes or no", "use_cache": False}})
    assert res.error is None, res.error
    assert ds.count("ground_truth.detections.vlm_verdict") == 18
    assert ds.get_run_info("vlm_judge").config.prompt == "is this a {label} ? yes or no"


def test_cli_vlm_judge(synthetic_dataset, tmp_path, monkeypatch, capsys):
    from grader.cli import main

    ds = synthetic_dataset
    monkeypatch.setenv("CLI_VLM_KEY", KEY)
    with FakeOpenAIServer(required_key=KEY) as srv:
        rc = main(["vlm-judge", "--dataset", ds.name, "--model", "fake-vlm", "--base-url",
                   srv.base_url, "--api-key-env", "CLI_VLM_KEY", "--limit", "2", "--mode", "both",
                   "--cache-dir", str(tmp_path / "c"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0 and KEY not in out
    assert srv.state.requests == ds.limit(2).count("ground_truth.detections") + 2
    assert ds.limit(2).count("ground_truth.detections.vlm_verdict") == 6
    assert ds.skip(2).count("ground_truth.detections.vlm_verdict") == 0


def test_operator_form_offers_backend_specific_inputs(synthetic_dataset):
    from types import SimpleNamespace

    from operators.vlm import RunVLMJudge

    op = RunVLMJudge()
    for backend, expect, absent in (("openai", {"base_url", "api_key_secret_name", "concurrency"},
                                     {"device"}),
                                    ("transformers", {"device", "batch_size"}, {"base_url"})):
        ctx = SimpleNamespace(params={"backend": backend, "prompt": "custom"},
                              dataset=synthetic_dataset, selected=[])
        props = op.resolve_input(ctx).type.properties
        assert expect <= set(props) and not (absent & set(props))
        assert {"model", "mode", "prompt", "custom_prompt", "threshold", "label_field"} <= set(props)
        assert not any(k in props for k in ("api_key", "key", "token"))  # never a key parameter
    assert op.config.allow_delegated_execution


def test_requests_are_closed_in_the_caller_when_the_backend_stops():
    """A backend that stops early (an exception mid-stream) leaves the request generator (and
    the renderer's thread pool inside it) closed right there, not to the garbage collector:
    finalized later, from inside another thread's start-up, it deadlocked a CI run."""
    from PIL import Image

    from grader.judges.vlm.backends import VLMRequest
    from grader.judges.vlm.judge import _Counter, _ask
    from grader.report import RunReport

    closed = []

    def requests():
        try:
            for i in range(10):
                yield i, VLMRequest(Image.new("RGB", (4, 4)), "q")
        finally:
            closed.append("requests")

    class Stops:
        model_id = "stops"

        def stream(self, reqs):
            try:
                for _ in reqs:
                    raise RuntimeError("backend down")
                yield None
            finally:
                closed.append("stream")

    with pytest.raises(RuntimeError, match="backend down") as exc:
        _ask(Stops(), requests(), {}, None, {}, RunReport("vlm"), _Counter(10, None), "err")
    assert closed == ["stream", "requests"]
    assert exc.value is not None    # the traceback (which holds the frames) is still alive here
