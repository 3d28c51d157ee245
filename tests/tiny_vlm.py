"""Build a tiny random-weight LLaVA-style vision-language model + processor, fully offline.

The tokenizer is a WordLevel vocabulary built in code, the image processor is CLIP's with
defaults scaled down, the chat template is a short Jinja string: nothing is downloaded.
``steer`` rewires the language head so greedy decoding says a chosen word with a chosen
yes/no probability, which lets tests check the full local path to exact field values.
"""
from __future__ import annotations

from pathlib import Path

WORDS = ("yes no the label is correct wrong box object a an of this image shows cat dog person "
         "it not magenta fits - . ,").split()
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_tiny_vlm(out_dir: str | Path, seed: int = 0) -> Path:
    """Save a tiny LLaVA (CLIP vision 2x32, Llama text 2x32) and its processor to ``out_dir``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor,
                              PreTrainedTokenizerFast)

    specials = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
    vocab = {t: i for i, t in enumerate(specials + list(dict.fromkeys(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    ftok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<s>", eos_token="</s>",
                                   extra_special_tokens={"image_token": "<image>"})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=56, patch_size=14)
    text = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                       max_position_embeddings=1024, pad_token_id=1, bos_token_id=2,
                       eos_token_id=3, tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    proc = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 56},
                                                             crop_size={"height": 56, "width": 56}),
                          tokenizer=ftok, chat_template=CHAT_TEMPLATE, patch_size=14,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    return out_dir


def steer(model, tokenizer, word: str, p_yes: float) -> None:
    """Make greedy decoding emit ``word`` at every step, with P(yes)/(P(yes)+P(no)) = ``p_yes``.

    Attention and MLP outputs are zeroed and every token embedding is the same vector, so the
    last hidden state is constant; the head then scores only ``word``, "yes" and "no".
    """
    import math

    import torch

    lm = model.model.language_model if hasattr(model.model, "language_model") else model.language_model
    with torch.no_grad():
        for layer in lm.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        lm.embed_tokens.weight.fill_(1.0)
        lm.norm.weight.fill_(1.0)
        head = model.lm_head.weight
        head.zero_()
        d = head.shape[1]
        ids = {w: tokenizer.convert_tokens_to_ids(w) for w in (word, "yes", "no")}
        # logits = head @ ones = d * row value; choose values giving the wanted probabilities.
        logit = lambda p: math.log(p)
        base = 10.0
        head[ids["yes"]] = (base + logit(p_yes)) / d
        head[ids["no"]] = (base + logit(1 - p_yes)) / d
        if word not in ("yes", "no"):
            head[ids[word]] = (base + 2.0) / d
