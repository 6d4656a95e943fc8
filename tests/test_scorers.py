"""Reward scorers: tiny random models saved in the ORIGINAL checkpoint formats, loaded through the real
loaders, and checked against forward passes written independently here in plain torch."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BertTokenizer, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

from diffpo.scoring import learned as scorers
from diffpo.models.loading import MissingWeightsError

from conftest import MEAN, PROMPTS, STD, WORDS


# ------------------------------------------------------------------ fixtures: tokenizers, images


@pytest.fixture(scope="module")
def bert_tok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bert_tokenizer")
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s"]) + "\n")
    return path


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _normalise(images: np.ndarray) -> torch.Tensor:
    """Images already at model size: resize/crop are identities, only [0,1] + mean/std remain."""
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return (x - MEAN) / STD


def _ids(tokenizer, prompts, length=77):
    return tokenizer(prompts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")["input_ids"]


def test_clip_tokenizer_fixture_is_real_bpe(clip_tok_dir):
    tok = CLIPTokenizer.from_pretrained(clip_tok_dir)
    ids = tok("a photo of a cat")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]


# ------------------------------------------------------------------ preprocessing


def test_resize_center_crop_matches_shorter_side_then_centre_crop():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (60, 40, 3), dtype=np.uint8))  # 60 high, 40 wide
    out = scorers.resize_center_crop(img, 20)
    ref = img.resize((20, 30), Image.BICUBIC).crop((0, 5, 20, 25))
    assert out.size == (20, 20)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))
    x = scorers.clip_preprocess([img], 20)
    np.testing.assert_allclose(x.numpy(), _normalise(np.asarray(ref)[None]).numpy(), atol=1e-6)


# ------------------------------------------------------------------ HPSv2: open_clip checkpoint


def _openclip_state_dict(config, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.1: torch.randn(*shape, generator=g) * s  # noqa: E731
    v, t = config.vision_config, config.text_config
    grid = v.image_size // v.patch_size
    sd = {
        "visual.conv1.weight": r(v.hidden_size, 3, v.patch_size, v.patch_size),
        "visual.class_embedding": r(v.hidden_size),
        "visual.positional_embedding": r(grid * grid + 1, v.hidden_size),
        "visual.ln_pre.weight": 1 + r(v.hidden_size), "visual.ln_pre.bias": r(v.hidden_size),
        "visual.ln_post.weight": 1 + r(v.hidden_size), "visual.ln_post.bias": r(v.hidden_size),
        "visual.proj": r(v.hidden_size, config.projection_dim),
        "token_embedding.weight": r(t.vocab_size, t.hidden_size),
        "positional_embedding": r(t.max_position_embeddings, t.hidden_size),
        "ln_final.weight": 1 + r(t.hidden_size), "ln_final.bias": r(t.hidden_size),
        "text_projection": r(t.hidden_size, config.projection_dim),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    for prefix, c in (("visual.transformer", v), ("transformer", t)):
        w = c.hidden_size
        for i in range(c.num_hidden_layers):
            b = f"{prefix}.resblocks.{i}."
            sd.update({
                b + "ln_1.weight": 1 + r(w), b + "ln_1.bias": r(w),
                b + "attn.in_proj_weight": r(3 * w, w, s=0.3), b + "attn.in_proj_bias": r(3 * w),
                b + "attn.out_proj.weight": r(w, w, s=0.3), b + "attn.out_proj.bias": r(w),
                b + "ln_2.weight": 1 + r(w), b + "ln_2.bias": r(w),
                b + "mlp.c_fc.weight": r(c.intermediate_size, w, s=0.3), b + "mlp.c_fc.bias": r(c.intermediate_size),
                b + "mlp.c_proj.weight": r(w, c.intermediate_size, s=0.3), b + "mlp.c_proj.bias": r(w),
            })
    return sd


def _mha(x, w_in, b_in, w_out, b_out, heads, mask=None):
    n, length, width = x.shape
    q, k, v = (x @ w_in.T + b_in).chunk(3, dim=-1)
    split = lambda y: y.view(n, length, heads, width // heads).transpose(1, 2)  # noqa: E731
    att = split(q) @ split(k).transpose(-1, -2) / math.sqrt(width // heads)
    if mask is not None:
        att = att + mask
    out = (att.softmax(-1) @ split(v)).transpose(1, 2).reshape(n, length, width)
    return out @ w_out.T + b_out


def _resblocks(x, sd, prefix, layers, heads, mask=None):
    ln = lambda y, name: F.layer_norm(y, y.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)  # noqa: E731
    for i in range(layers):
        b = f"{prefix}.resblocks.{i}."
        x = x + _mha(ln(x, b + "ln_1"), sd[b + "attn.in_proj_weight"], sd[b + "attn.in_proj_bias"],
                     sd[b + "attn.out_proj.weight"], sd[b + "attn.out_proj.bias"], heads, mask)
        h = F.gelu(ln(x, b + "ln_2") @ sd[b + "mlp.c_fc.weight"].T + sd[b + "mlp.c_fc.bias"])
        x = x + h @ sd[b + "mlp.c_proj.weight"].T + sd[b + "mlp.c_proj.bias"]
    return x


def _openclip_forward(sd, pixels, ids, config):
    """open_clip VisionTransformer / text tower, written from the original state-dict layout."""
    v, t = config.vision_config, config.text_config
    ln = lambda y, name: F.layer_norm(y, y.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps=1e-5)  # noqa: E731
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=v.patch_size).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + sd["visual.positional_embedding"]
    x = _resblocks(ln(x, "visual.ln_pre"), sd, "visual.transformer", v.num_hidden_layers, v.num_attention_heads)
    image = ln(x[:, 0], "visual.ln_post") @ sd["visual.proj"]
    length = ids.shape[1]
    causal = torch.full((length, length), float("-inf")).triu(1)
    y = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:length]
    y = ln(_resblocks(y, sd, "transformer", t.num_hidden_layers, t.num_attention_heads, causal), "ln_final")
    text = y[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]
    return image, text


@pytest.fixture(scope="module")
def hps_files(tmp_path_factory, clip_tok_dir):
    config = scorers.hpsv2_config(tiny=True, vocab_size=len(CLIPTokenizer.from_pretrained(clip_tok_dir)))
    folder = tmp_path_factory.mktemp("HPSv2")
    sd20, sd21 = _openclip_state_dict(config, seed=0), _openclip_state_dict(config, seed=1)
    torch.save({"state_dict": sd20}, folder / "HPS_v2_compressed.pt")
    torch.save(sd21, folder / "HPS_v2.1_compressed.pt")  # bare state dict also accepted
    return config, folder, sd20, sd21


def test_openclip_to_hf_clip_mapping_is_complete(hps_files):
    config, _, sd, _ = hps_files
    mapped = scorers.openclip_to_hf_clip(sd, config)
    expected = {k for k in CLIPModel(config).state_dict() if not k.endswith("position_ids")}
    assert set(mapped) == expected
    torch.testing.assert_close(mapped["visual_projection.weight"], sd["visual.proj"].T)
    q = mapped["text_model.encoder.layers.1.self_attn.q_proj.weight"]
    torch.testing.assert_close(q, sd["transformer.resblocks.1.attn.in_proj_weight"][: config.text_config.hidden_size])


@pytest.mark.parametrize("version", ["v2.0", "v2.1"])
def test_hpsv2_matches_openclip_forward(hps_files, clip_tok_dir, version):
    config, folder, sd20, sd21 = hps_files
    sd = sd20 if version == "v2.0" else sd21
    scorer = scorers.load_hpsv2(folder, clip_tok_dir, version=version, config=config)
    assert scorer.version == f"HPS {version}" and scorer.scale.startswith("100 * cos")
    images = _images(4, config.vision_config.image_size)
    got = scorer.score(images, PROMPTS, batch_size=3)  # 2 batches
    image, text = _openclip_forward(sd, _normalise(images), _ids(CLIPTokenizer.from_pretrained(clip_tok_dir), PROMPTS), config)
    expected = 100 * F.cosine_similarity(image, text, dim=-1)
    assert got.shape == (4,) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-3)
    assert np.abs(got).max() > 1.0  # on the 100x scale, not a raw cosine


def test_hpsv2_versions_differ_and_file_path_accepted(hps_files, clip_tok_dir):
    config, folder, _, _ = hps_files
    images = _images(2, config.vision_config.image_size, seed=5)
    a = scorers.load_hpsv2(folder / "HPS_v2_compressed.pt", clip_tok_dir, config=config).score(images, PROMPTS[:2])
    b = scorers.build_scorer("hpsv2", checkpoint_source=folder, tokenizer_source=clip_tok_dir, version="v2.1",
                             config=config).score(images, PROMPTS[:2])
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="version"):
        scorers.load_hpsv2(folder / "HPS_v2.1_compressed.pt", clip_tok_dir, version="v2.0", config=config)
    with pytest.raises(ValueError, match="unknown HPS version"):
        scorers.load_hpsv2(folder, clip_tok_dir, version="v3", config=config)


# ------------------------------------------------------------------ PickScore: transformers CLIPModel folder


@pytest.fixture(scope="module")
def pick_files(tmp_path_factory, clip_tok_dir):
    tok = CLIPTokenizer.from_pretrained(clip_tok_dir)
    config = scorers.pickscore_config(tiny=True, vocab_size=len(tok))
    torch.manual_seed(0)
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))  # PickScore_v1's learned scale is ~100
    model_dir = tmp_path_factory.mktemp("PickScore_v1")
    model.save_pretrained(model_dir)
    proc_dir = tmp_path_factory.mktemp("clip_processor")
    tok.save_pretrained(proc_dir)
    size = config.vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(proc_dir)
    return model, model_dir, proc_dir


def test_pickscore_is_logit_scale_times_cosine(pick_files):
    model, model_dir, proc_dir = pick_files
    scorer = scorers.load_pickscore(model_dir, proc_dir)
    assert "logit_scale.exp()" in scorer.scale
    images = _images(3, model.config.vision_config.image_size, seed=2)
    got = scorer.score(images, PROMPTS[:3], batch_size=2)
    ids = CLIPTokenizer.from_pretrained(proc_dir)(PROMPTS[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        image = model.visual_projection(model.vision_model(pixel_values=_normalise(images)).pooler_output)
        text = model.text_projection(model.text_model(**ids).pooler_output)
        cosine = F.cosine_similarity(image, text, dim=-1)
    np.testing.assert_allclose(got, (100.0 * cosine).numpy(), rtol=1e-4, atol=1e-4)
    assert not np.allclose(got, cosine.numpy(), atol=1e-2)  # the raw-cosine scale trap


# ------------------------------------------------------------------ Aesthetic: layers.N .pth + CLIP ViT-L/14 folder


def test_aesthetic_matches_hand_mlp(tmp_path, clip_tok_dir):
    config = scorers.hpsv2_config(tiny=True, vocab_size=len(CLIPTokenizer.from_pretrained(clip_tok_dir)))
    torch.manual_seed(1)
    clip = CLIPModel(config)
    clip_dir = tmp_path / "clip-vit-large-patch14"
    clip.save_pretrained(clip_dir)
    size = config.vision_config.image_size
    CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(clip_dir)
    g = torch.Generator().manual_seed(3)
    dims = [config.projection_dim, 1024, 128, 64, 16, 1]
    sd = {}
    for idx, (i, o) in zip([0, 2, 4, 6, 7], zip(dims[:-1], dims[1:])):
        sd[f"layers.{idx}.weight"] = torch.randn(o, i, generator=g) / math.sqrt(i)
        sd[f"layers.{idx}.bias"] = torch.randn(o, generator=g) * 0.1
    mlp_path = tmp_path / scorers.AESTHETIC_FILE
    torch.save(sd, mlp_path)

    scorer = scorers.load_aesthetic(mlp_path, clip_dir)
    images = _images(3, size, seed=4)
    got = scorer.score(images, None)
    with torch.no_grad():
        emb = clip.visual_projection(clip.vision_model(pixel_values=_normalise(images)).pooler_output)
    x = emb / emb.norm(dim=-1, keepdim=True)
    for idx in [0, 2, 4, 6, 7]:  # no activations, dropout is identity at eval
        x = x @ sd[f"layers.{idx}.weight"].T + sd[f"layers.{idx}.bias"]
    np.testing.assert_allclose(got, x[:, 0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scorer.score(images, ["ignored"] * 3), got)
    assert scorers.load_aesthetic(tmp_path, clip_dir).score(images[:1], None)[0] == pytest.approx(got[0], rel=1e-5)


# ------------------------------------------------------------------ ImageReward: ImageReward.pt layout


def _imagereward_files(folder, vision_cfg, med, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, s=0.1: torch.randn(*shape, generator=g) * s  # noqa: E731
    dv, dt = vision_cfg.hidden_size, med["hidden_size"]
    grid = vision_cfg.image_size // vision_cfg.patch_size
    sd = {
        "blip.visual_encoder.cls_token": r(1, 1, dv), "blip.visual_encoder.pos_embed": r(1, grid * grid + 1, dv),
        "blip.visual_encoder.patch_embed.proj.weight": r(dv, 3, vision_cfg.patch_size, vision_cfg.patch_size),
        "blip.visual_encoder.patch_embed.proj.bias": r(dv),
        "blip.visual_encoder.norm.weight": 1 + r(dv), "blip.visual_encoder.norm.bias": r(dv),
        "blip.vision_proj.weight": r(8, dv), "blip.vision_proj.bias": r(8),  # unused by the reward
        "blip.text_proj.weight": r(8, dt), "blip.text_proj.bias": r(8),
        "blip.text_encoder.embeddings.word_embeddings.weight": r(med["vocab_size"], dt),
        "blip.text_encoder.embeddings.position_embeddings.weight": r(med["max_position_embeddings"], dt),
        "blip.text_encoder.embeddings.position_ids": torch.arange(med["max_position_embeddings"])[None],
        "blip.text_encoder.embeddings.LayerNorm.weight": 1 + r(dt), "blip.text_encoder.embeddings.LayerNorm.bias": r(dt),
    }
    mlp_dims = [dt, 1024, 128, 64, 16, 1]
    for idx, (i, o) in zip([0, 2, 4, 6, 7], zip(mlp_dims[:-1], mlp_dims[1:])):
        sd[f"mlp.layers.{idx}.weight"] = torch.randn(o, i, generator=g) / math.sqrt(i)
        sd[f"mlp.layers.{idx}.bias"] = r(o)
    for i in range(vision_cfg.num_hidden_layers):
        b = f"blip.visual_encoder.blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dv), b + "norm1.bias": r(dv), b + "norm2.weight": 1 + r(dv), b + "norm2.bias": r(dv),
                   b + "attn.qkv.weight": r(3 * dv, dv, s=0.3), b + "attn.qkv.bias": r(3 * dv),
                   b + "attn.proj.weight": r(dv, dv, s=0.3), b + "attn.proj.bias": r(dv),
                   b + "mlp.fc1.weight": r(vision_cfg.intermediate_size, dv, s=0.3), b + "mlp.fc1.bias": r(vision_cfg.intermediate_size),
                   b + "mlp.fc2.weight": r(dv, vision_cfg.intermediate_size, s=0.3), b + "mlp.fc2.bias": r(dv)})
    inter = med["intermediate_size"]
    for i in range(med["num_hidden_layers"]):
        b = f"blip.text_encoder.encoder.layer.{i}."
        for att, kv_in in (("attention", dt), ("crossattention", dv)):
            sd.update({b + f"{att}.self.query.weight": r(dt, dt, s=0.3), b + f"{att}.self.query.bias": r(dt),
                       b + f"{att}.self.key.weight": r(dt, kv_in, s=0.3), b + f"{att}.self.key.bias": r(dt),
                       b + f"{att}.self.value.weight": r(dt, kv_in, s=0.3), b + f"{att}.self.value.bias": r(dt),
                       b + f"{att}.output.dense.weight": r(dt, dt, s=0.3), b + f"{att}.output.dense.bias": r(dt),
                       b + f"{att}.output.LayerNorm.weight": 1 + r(dt), b + f"{att}.output.LayerNorm.bias": r(dt)})
        sd.update({b + "intermediate.dense.weight": r(inter, dt, s=0.3), b + "intermediate.dense.bias": r(inter),
                   b + "output.dense.weight": r(dt, inter, s=0.3), b + "output.dense.bias": r(dt),
                   b + "output.LayerNorm.weight": 1 + r(dt), b + "output.LayerNorm.bias": r(dt)})
    torch.save(sd, folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps(med))
    return sd


def _attend(q_in, kv_in, sd, p, heads, mask=None):
    n, lq, d = q_in.shape
    lin = lambda y, name: y @ sd[f"{p}.{name}.weight"].T + sd[f"{p}.{name}.bias"]  # noqa: E731
    split = lambda y: y.view(n, y.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
    att = split(lin(q_in, "query")) @ split(lin(kv_in, "key")).transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        att = att + mask
    return (att.softmax(-1) @ split(lin(kv_in, "value"))).transpose(1, 2).reshape(n, lq, d)


def _imagereward_forward(sd, pixels, ids, attention, vision_cfg, med):
    """BLIP VisionTransformer (timm layout) + med.py BertModel in multimodal mode + MLP, from the original keys."""
    pv = "blip.visual_encoder."
    ln = lambda y, name, eps: F.layer_norm(y, y.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps=eps)  # noqa: E731
    x = F.conv2d(pixels, sd[pv + "patch_embed.proj.weight"], sd[pv + "patch_embed.proj.bias"], stride=vision_cfg.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[pv + "cls_token"].expand(len(x), -1, -1), x], dim=1) + sd[pv + "pos_embed"]
    heads, n = vision_cfg.num_attention_heads, len(x)
    for i in range(vision_cfg.num_hidden_layers):
        b = pv + f"blocks.{i}."
        h = ln(x, b + "norm1", 1e-6)
        qkv = (h @ sd[b + "attn.qkv.weight"].T + sd[b + "attn.qkv.bias"]).view(n, h.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
        att = (qkv[0] @ qkv[1].transpose(-1, -2) * qkv.shape[-1] ** -0.5).softmax(-1)
        x = x + (att @ qkv[2]).transpose(1, 2).reshape(h.shape) @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        h = F.gelu(ln(x, b + "norm2", 1e-6) @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        x = x + h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
    image_embeds = ln(x, pv + "norm", 1e-6)

    pt, eps = "blip.text_encoder.", med["layer_norm_eps"]
    y = sd[pt + "embeddings.word_embeddings.weight"][ids] + sd[pt + "embeddings.position_embeddings.weight"][: ids.shape[1]]
    y = ln(y, pt + "embeddings.LayerNorm", eps)
    pad_mask = (1.0 - attention[:, None, None, :].float()) * -1e9
    th = med["num_attention_heads"]
    dense = lambda z, name: z @ sd[name + ".weight"].T + sd[name + ".bias"]  # noqa: E731
    for i in range(med["num_hidden_layers"]):
        b = pt + f"encoder.layer.{i}."
        a = _attend(y, y, sd, b + "attention.self", th, pad_mask)
        y = ln(dense(a, b + "attention.output.dense") + y, b + "attention.output.LayerNorm", eps)
        c = _attend(y, image_embeds, sd, b + "crossattention.self", th)
        y = ln(dense(c, b + "crossattention.output.dense") + y, b + "crossattention.output.LayerNorm", eps)
        h = F.gelu(dense(y, b + "intermediate.dense"))
        y = ln(dense(h, b + "output.dense") + y, b + "output.LayerNorm", eps)
    r = y[:, 0]
    for idx in [0, 2, 4, 6, 7]:
        r = r @ sd[f"mlp.layers.{idx}.weight"].T + sd[f"mlp.layers.{idx}.bias"]
    return (r[:, 0] - 0.16717362830052426) / 1.0333394966054072


def test_imagereward_matches_blip_forward(tmp_path, bert_tok_dir):
    vision_cfg = scorers.imagereward_vision_config(tiny=True)
    vocab = len(BertTokenizer.from_pretrained(bert_tok_dir)) + 2  # + [DEC], [ENC] as BLIP's init_tokenizer
    med = {"architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": 32, "intermediate_size": 64,
           "layer_norm_eps": 1e-12, "max_position_embeddings": 40, "model_type": "bert", "num_attention_heads": 4,
           "num_hidden_layers": 2, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": vocab,
           "encoder_width": 768, "add_cross_attention": True}
    sd = _imagereward_files(tmp_path, vision_cfg, med)
    scorer = scorers.load_imagereward(tmp_path, tmp_path / "med_config.json", bert_tok_dir, vision_config=vision_cfg)
    assert scorer.version == "ImageReward-v1.0"
    images = _images(4, vision_cfg.image_size, seed=6)
    prompts = [PROMPTS[0], PROMPTS[1], "cats " * 50, PROMPTS[3]]  # one over the 35-token limit
    got = scorer.score(images, prompts, batch_size=3)
    tok = BertTokenizer.from_pretrained(bert_tok_dir)
    enc = tok(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
    assert enc["input_ids"].shape[1] == 35 and (enc["input_ids"][:, 0] == tok.cls_token_id).all()
    expected = _imagereward_forward(sd, _normalise(images), enc["input_ids"], enc["attention_mask"], vision_cfg, med)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_imagereward_constants_and_mlp_layout():
    assert scorers.IMAGEREWARD_MEAN == 0.16717362830052426
    assert scorers.IMAGEREWARD_STD == 1.0333394966054072
    assert scorers.IMAGEREWARD_MAX_LENGTH == 35
    keys = [k for k in scorers.reward_mlp(768).state_dict() if k.endswith("weight")]
    assert keys == ["0.weight", "2.weight", "4.weight", "6.weight", "7.weight"]
    assert scorers.imagereward_vision_config().image_size == 224  # BLIP_Pretrain(image_size=224, vit='large')
    assert scorers.hpsv2_config().vision_config.hidden_act == "gelu"


# ------------------------------------------------------------------ errors and registry


def test_missing_files_fail_clearly(tmp_path, clip_tok_dir, bert_tok_dir):
    cases = [
        (lambda: scorers.load_hpsv2(tmp_path / "nowhere" / "HPS_v2_compressed.pt", clip_tok_dir), "HPS_v2_compressed.pt"),
        (lambda: scorers.load_hpsv2(tmp_path, clip_tok_dir, version="v2.1"), "HPS_v2.1_compressed.pt"),
        (lambda: scorers.load_hpsv2("xswu/HPSv2", clip_tok_dir), "HPS_v2_compressed.pt"),  # hub id, not cached
        (lambda: scorers.load_imagereward(tmp_path, tmp_path, bert_tok_dir), "ImageReward.pt"),
        (lambda: scorers.load_aesthetic(tmp_path / "x" / scorers.AESTHETIC_FILE, tmp_path), scorers.AESTHETIC_FILE),
        (lambda: scorers.load_aesthetic(), scorers.AESTHETIC_FILE),
        (lambda: scorers.load_pickscore(tmp_path / "no" / "PickScore_v1", clip_tok_dir), "PickScore"),
    ]
    for load, filename in cases:
        with pytest.raises(MissingWeightsError) as info:
            load()
        assert isinstance(info.value, FileNotFoundError)
        message = str(info.value)
        assert filename in message and "offline" in message and "huggingface-cli download" in message, message


def test_registry():
    assert set(scorers.SCORERS) == {"pickscore", "hpsv2", "imagereward", "aesthetic"}
    with pytest.raises(ValueError, match="known scorers: aesthetic, hpsv2, imagereward, pickscore"):
        scorers.build_scorer("clipscore")
    with pytest.raises(MissingWeightsError, match=r"HPS_v2\.1_compressed\.pt"):  # alias selects v2.1
        scorers.build_scorer("HPS-v2.1", checkpoint_source="/nonexistent/dir/x.pt")


def test_score_validates_inputs(hps_files, clip_tok_dir):
    config, folder, _, _ = hps_files
    scorer = scorers.load_hpsv2(folder, clip_tok_dir, config=config)
    with pytest.raises(ValueError, match="prompts"):
        scorer.score(_images(2, 28), ["one"])
    with pytest.raises(ValueError, match="uint8"):
        scorer.score(_images(1, 28).astype(np.float32), ["one"])
    assert scorer.score(np.zeros((0, 28, 28, 3), np.uint8), []).shape == (0,)
    assert scorer.describe() == {"name": "hpsv2", "version": "HPS v2.0", "scale": scorer.scale}
