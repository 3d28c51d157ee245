"""Backend for local ``transformers`` vision-language models (chat-template models such as
Qwen2-VL/Qwen2.5-VL, SmolVLM/Idefics3, LLaVA), loaded by hub id or local directory.

Requests are batched (left padding), decoded greedily, and the yes/no probability is read from
the generation scores at the step where the answer word is produced.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Hashable, Iterable, Iterator

from .backends import VLMBackendError, VLMRequest, VLMResponse
from .parse import NO, YES, answer_step, norm_token

log = logging.getLogger(__name__)


def _load(model: str, device: str, dtype: str | None):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs: dict[str, Any] = {}
    if dtype and dtype != "auto":
        kwargs["dtype"] = getattr(torch, dtype)
    elif dtype == "auto":
        kwargs["dtype"] = "auto"
    try:
        processor = AutoProcessor.from_pretrained(model)
        net = AutoModelForImageTextToText.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as e:
        where = "local directory" if os.path.isdir(model) else "hub id"
        raise VLMBackendError(
            f"cannot load vision-language model {model!r} ({where}): {e}. Provide a local "
            "directory holding the model and its processor (config.json, weights, "
            "preprocessor/tokenizer files), or a hub id with network access or a populated "
            "Hugging Face cache.") from e
    return processor, net.to(device).eval()


class TransformersBackend:
    """A local image-text-to-text model run in batches on CPU or GPU."""

    def __init__(self, model: str, *, device: str | None = None, batch_size: int = 4,
                 max_new_tokens: int = 64, dtype: str | None = None, processor=None,
                 model_obj=None):
        import torch

        self.model = model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = max(int(batch_size), 1)
        self.max_new_tokens = int(max_new_tokens)
        if model_obj is not None and processor is not None:
            self.processor, self.net = processor, model_obj.to(self.device).eval()
        else:
            self.processor, self.net = _load(model, self.device, dtype)
        tok = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer = tok
        # Decoder-only batch generation needs left padding to keep prompts flush with outputs.
        tok.padding_side = "left"
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        vocab = tok.get_vocab()
        # Raw token strings ("Ġyes", "▁Yes", "yes") normalise to the word; all variants count.
        self._yes_ids = [i for t, i in vocab.items() if norm_token(t) == YES]
        self._no_ids = [i for t, i in vocab.items() if norm_token(t) == NO]

    @property
    def model_id(self) -> str:
        return f"transformers:{os.path.abspath(self.model) if os.path.isdir(self.model) else self.model}"

    def describe(self) -> dict[str, Any]:
        return {"backend": "transformers", "model": self.model, "device": self.device,
                "batch_size": self.batch_size, "max_new_tokens": self.max_new_tokens}

    def _inputs(self, batch: list[VLMRequest]):
        messages = [[{"role": "user", "content": [{"type": "image"},
                                                  {"type": "text", "text": r.prompt}]}]
                    for r in batch]
        texts = [self.processor.apply_chat_template(m, add_generation_prompt=True) for m in messages]
        # Idefics3/SmolVLM expect one image list per prompt; others accept a flat list.
        images = [r.image.convert("RGB") for r in batch]
        try:
            inputs = self.processor(images=[[im] for im in images], text=texts,
                                    return_tensors="pt", padding=True)
        except (ValueError, TypeError):
            inputs = self.processor(images=images, text=texts, return_tensors="pt", padding=True)
        return inputs.to(self.device)

    def generate(self, batch: list[VLMRequest]) -> list[VLMResponse]:
        """Answer one batch (greedy decoding)."""
        import torch

        inputs = self._inputs(batch)
        with torch.inference_mode():
            out = self.net.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    output_scores=True, return_dict_in_generate=True)
        new = out.sequences[:, inputs["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        results = []
        for b in range(len(batch)):
            toks = [self.tokenizer.decode([int(t)], skip_special_tokens=True) for t in new[b]]
            step = answer_step(toks)
            yes_prob = None
            if step is not None and step < len(out.scores) and self._yes_ids and self._no_ids:
                probs = torch.softmax(out.scores[step][b].float(), dim=-1)
                p_yes = float(probs[self._yes_ids].sum())
                p_no = float(probs[self._no_ids].sum())
                if p_yes + p_no > 0:
                    yes_prob = p_yes / (p_yes + p_no)
            results.append(VLMResponse(texts[b].strip(), yes_prob, None))
        return results

    def stream(self, requests_: Iterable[tuple[Hashable, VLMRequest]]
               ) -> Iterator[tuple[Hashable, VLMResponse]]:
        keys, batch = [], []
        for key, req in requests_:
            keys.append(key)
            batch.append(req)
            if len(batch) >= self.batch_size:
                yield from zip(keys, self.generate(batch))
                keys, batch = [], []
        if batch:
            yield from zip(keys, self.generate(batch))
