# An independent PyTorch implementation of DeepSeek-V3 as docs/deepseek_v3.md fixes it, with a minimal safetensors reader/writer: the reference for latent's fixtures and benchmark twin.
"""DeepSeek-V3 (training form) in plain PyTorch, parameter names = the Hugging Face checkpoint names.

What it covers, each as docs/deepseek_v3.md states it:
  * MLA with q-LoRA (q_a_proj -> q_a_layernorm -> q_b_proj) or a plain q_proj (q_lora_rank 0/null),
    decoupled RoPE rotating ADJACENT pairs (2i, 2i+1), YaRN frequencies and the mscale^2 softmax factor;
  * DeepSeekMoE: sigmoid gate with the noaux_tc router (correction bias for selection only, group score
    = sum of the top-2 biased scores, dropped groups at -inf), weights from the unbiased scores,
    norm_topk_prob, routed_scaling_factor, shared experts, dense first layers;
    DeepSeek-V2's softmax gate with topk_method "greedy" / "group_limited_greedy" (group score = max;
    as in V2's code, normalised weights are not multiplied by routed_scaling_factor);
  * balance losses: V3 sequence-wise (f_i over the plain top-K of the unbiased scores, P_i over scores
    normalised per token) and V2 expert-level (f_i over the actual selection, P_i over softmax scores),
    both per sequence, averaged over the batch and summed over MoE layers;
  * multi-token prediction with D chained modules stored as layers L..L+D-1, loss composition,
    the aux-loss-free bias update, greedy generation (full recompute, or the absorbed latent cache).

Everything runs in the dtype of the parameters; the fixtures use float64, the benchmark twin float32.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, JSON header {name: {dtype, shape, data_offsets}},
# optional "__metadata__" of strings, then the raw little-endian tensor bytes.

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_SAFETENSORS_CODES = {dtype: code for code, dtype in _SAFETENSORS_DTYPES.items()}


def read_safetensors(path):
    """Returns ({name: tensor}, {metadata key: string})."""
    if sys.byteorder != "little":
        raise RuntimeError("read_safetensors: only little-endian hosts are supported")
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise ValueError(f"read_safetensors: {path}: header length {header_len} exceeds file size {len(data)}")
    header = json.loads(data[8:8 + header_len])
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + header_len
    tensors = {}
    for name, info in header.items():
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"read_safetensors: {path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = _SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        numel = math.prod(info["shape"])
        if end - begin != numel * torch.empty((), dtype=dtype).element_size():
            raise ValueError(f"read_safetensors: {path}: tensor {name} shape {info['shape']} does not match "
                             f"{end - begin} bytes")
        raw = bytearray(data[base + begin:base + end])
        flat = torch.frombuffer(raw, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(info["shape"])
    return tensors, metadata


def write_safetensors(path, tensors, metadata=None):
    """Writes tensors in sorted-name order, header padded with spaces to a multiple of 8; atomic."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _SAFETENSORS_CODES or t.dtype == torch.bfloat16:
            raise ValueError(f"write_safetensors: tensor {name} has unsupported dtype {t.dtype}")
        raw = t.numpy().tobytes()
        header[name] = {"dtype": _SAFETENSORS_CODES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------
# Configuration: the Hugging Face config.json keys, with the defaults docs/deepseek_v3.md implies.

_CONFIG_DEFAULTS = {
    "q_lora_rank": 0, "n_group": 1, "topk_group": 1, "first_k_dense_replace": 0, "moe_layer_freq": 1,
    "num_nextn_predict_layers": 0, "n_shared_experts": 0, "routed_scaling_factor": 1.0,
    "norm_topk_prob": True, "scoring_func": "sigmoid", "topk_method": "noaux_tc", "rope_theta": 10000.0,
    "rope_scaling": None, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "aux_loss_alpha": 0.0,
    "initializer_range": 0.02,
}

PRESETS = {
    # = /work/shared/fixtures/dsv3-tiny/config.json
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                 num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, q_lora_rank=32,
                 kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_routed_experts=8,
                 n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2, routed_scaling_factor=2.5,
                 norm_topk_prob=True, scoring_func="sigmoid", topk_method="noaux_tc", num_nextn_predict_layers=1,
                 max_position_embeddings=128, rope_theta=10000.0, rms_norm_eps=1e-6, aux_loss_alpha=0.01,
                 rope_scaling=dict(type="yarn", factor=4.0, original_max_position_embeddings=32, beta_fast=32,
                                   beta_slow=1, mscale=1.0, mscale_all_dim=1.0)),
    "small": dict(vocab_size=256, hidden_size=256, intermediate_size=768, moe_intermediate_size=128,
                  num_hidden_layers=4, first_k_dense_replace=1, num_attention_heads=8, q_lora_rank=128,
                  kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, n_routed_experts=16,
                  n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2, routed_scaling_factor=2.5,
                  norm_topk_prob=True, scoring_func="sigmoid", topk_method="noaux_tc", num_nextn_predict_layers=1,
                  max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-6, aux_loss_alpha=1e-4,
                  rope_scaling=None),
}


class DeepseekConfig:
    def __init__(self, values):
        merged = dict(_CONFIG_DEFAULTS)
        merged.update(values)
        if merged["q_lora_rank"] is None:
            merged["q_lora_rank"] = 0
        self.__dict__.update(merged)
        self.validate()

    @classmethod
    def from_json_file(cls, path):
        with open(path) as f:
            return cls(json.load(f))

    @classmethod
    def preset(cls, name):
        if name not in PRESETS:
            raise ValueError(f"DeepseekConfig.preset: unknown preset '{name}' (have {sorted(PRESETS)})")
        return cls(PRESETS[name])

    @property
    def qk_head_dim(self):
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer):
        return layer >= self.first_k_dense_replace and layer % self.moe_layer_freq == 0

    def yarn(self):
        rs = self.rope_scaling
        if rs and rs.get("type", rs.get("rope_type")) == "yarn":
            return rs
        return None

    def validate(self):
        def need(cond, what):
            if not cond:
                raise ValueError(f"DeepseekConfig: {what}")
        need(self.qk_rope_head_dim % 2 == 0, f"qk_rope_head_dim {self.qk_rope_head_dim} must be even")
        need(self.scoring_func in ("sigmoid", "softmax"), f"scoring_func '{self.scoring_func}' unknown")
        need(self.topk_method in ("noaux_tc", "greedy", "group_limited_greedy"),
             f"topk_method '{self.topk_method}' unknown")
        need(self.n_routed_experts % self.n_group == 0,
             f"n_routed_experts {self.n_routed_experts} not divisible by n_group {self.n_group}")
        need(1 <= self.topk_group <= self.n_group, f"topk_group {self.topk_group} not in [1, {self.n_group}]")
        kept = self.topk_group * self.n_routed_experts // self.n_group
        if self.topk_method != "greedy":
            need(self.num_experts_per_tok <= kept,
                 f"num_experts_per_tok {self.num_experts_per_tok} exceeds the {kept} experts of the kept groups")
        if self.topk_method == "noaux_tc" and self.n_group > 1:
            need(self.n_routed_experts // self.n_group >= 2, "noaux_tc group score needs >= 2 experts per group")


# ----------------------------------------------------------------------------------------------------
# Building blocks

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # y = w * x / sqrt(mean(x^2) + eps)
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class SwiGLU(nn.Module):
    """down_proj(silu(gate_proj(x)) * up_proj(x)): dense MLP, routed expert and shared experts alike."""

    def __init__(self, hidden, intermediate):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def rope_inverse_frequencies(cfg):
    """inv_freq_i = base^(-2i/dim), blended towards inv_freq_i/factor by the YaRN ramp (float64)."""
    dim, base = cfg.qk_rope_head_dim, float(cfg.rope_theta)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    yarn = cfg.yarn()
    if yarn is None:
        return inv_freq
    factor, original = float(yarn["factor"]), float(yarn["original_max_position_embeddings"])

    def correction_dim(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(correction_dim(yarn.get("beta_fast", 32))), 0)
    high = min(math.ceil(correction_dim(yarn.get("beta_slow", 1))), dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    return inv_freq / factor * ramp + inv_freq * (1 - ramp)


def softmax_scale(cfg):
    """(nope + rope)^-0.5, times mscale^2 with YaRN, mscale = 0.1 * mscale_all_dim * ln(factor) + 1.

    A missing mscale_all_dim counts as 0 (no factor), as in the HF code that reads these configs.
    """
    scale = cfg.qk_head_dim ** -0.5
    yarn = cfg.yarn()
    if yarn is not None and float(yarn["factor"]) > 1:
        mscale = 0.1 * float(yarn.get("mscale_all_dim", 0.0)) * math.log(float(yarn["factor"])) + 1.0
        scale *= mscale * mscale
    return scale


def rope_cos_sin(cfg, positions, dtype):
    """cos, sin of positions x inv_freq: [T, rope/2], computed in float64 then cast."""
    angles = positions.to(torch.float64)[:, None] * rope_inverse_frequencies(cfg)[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    """Rotates adjacent pairs: (x_2i, x_2i+1) -> (x_2i c - x_2i+1 s, x_2i s + x_2i+1 c); x [B,T,H,D], cos [T,D/2]."""
    pairs = x.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.stack((even * c - odd * s, even * s + odd * c), dim=-1).flatten(-2)


# ----------------------------------------------------------------------------------------------------
# Multi-head latent attention

class MLA(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, H = cfg.hidden_size, cfg.num_attention_heads
        if cfg.q_lora_rank:
            self.q_a_proj = nn.Linear(d, cfg.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, cfg.rms_norm_eps)
            self.q_b_proj = nn.Linear(cfg.q_lora_rank, H * cfg.qk_head_dim, bias=False)
        else:
            self.q_proj = nn.Linear(d, H * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, cfg.rms_norm_eps)
        self.kv_b_proj = nn.Linear(cfg.kv_lora_rank, H * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = nn.Linear(H * cfg.v_head_dim, d, bias=False)
        self.scale = softmax_scale(cfg)

    def queries(self, x):
        """[B,T,d] -> q_nope [B,T,H,nope], q_pe [B,T,H,rope] (not yet rotated)."""
        cfg = self.cfg
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if cfg.q_lora_rank else self.q_proj(x)
        q = q.unflatten(-1, (cfg.num_attention_heads, cfg.qk_head_dim))
        return q.split([cfg.qk_nope_head_dim, cfg.qk_rope_head_dim], dim=-1)

    def latents(self, x):
        """[B,T,d] -> normalised c_kv [B,T,kv_lora], k_pe [B,T,rope] (not yet rotated)."""
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.cfg.kv_lora_rank, self.cfg.qk_rope_head_dim], dim=-1)
        return self.kv_a_layernorm(c_kv), k_pe

    def forward(self, x, cos, sin):
        cfg = self.cfg
        B, T, _ = x.shape
        H = cfg.num_attention_heads
        q_nope, q_pe = self.queries(x)
        c_kv, k_pe = self.latents(x)
        kv = self.kv_b_proj(c_kv).unflatten(-1, (H, cfg.qk_nope_head_dim + cfg.v_head_dim))
        k_nope, v = kv.split([cfg.qk_nope_head_dim, cfg.v_head_dim], dim=-1)
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe[:, :, None, :], cos, sin).expand(B, T, H, cfg.qk_rope_head_dim)
        q = torch.cat((q_nope, q_pe), dim=-1).transpose(1, 2)  # [B,H,T,qk]
        k = torch.cat((k_nope, k_pe), dim=-1).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        probs = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
        out = (probs @ v.transpose(1, 2)).transpose(1, 2).reshape(B, T, H * cfg.v_head_dim)
        return self.o_proj(out)

    def forward_absorbed(self, x, cos, sin, cache):
        """Decoding with the latent cache: cache = {"c_kv": [B,S,kv_lora], "k_pe": [B,S,rope]} (grown in place).

        kv_b_proj folds into both sides: W_UK (rows of k_nope) turns q_nope into a query over c_kv,
        W_UV (rows of v) maps the attention-weighted latent back to per-head values:
          score[h,t] = (q_nope_h W_UK_h) . c_t + q_pe_h . k_pe_t ;  o_h = (sum_t p[h,t] c_t) W_UV_h^T.
        """
        cfg = self.cfg
        H, nope = cfg.num_attention_heads, cfg.qk_nope_head_dim
        q_nope, q_pe = self.queries(x)
        c_kv, k_pe = self.latents(x)
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe[:, :, None, :], cos, sin)[:, :, 0, :]
        for key, new in (("c_kv", c_kv), ("k_pe", k_pe)):
            cache[key] = new if key not in cache else torch.cat((cache[key], new), dim=1)
        w_kvb = self.kv_b_proj.weight.unflatten(0, (H, nope + cfg.v_head_dim))  # [H, nope+v, kv_lora]
        w_uk, w_uv = w_kvb[:, :nope, :], w_kvb[:, nope:, :]
        q_latent = torch.einsum("bthd,hdc->bthc", q_nope, w_uk)
        scores = (torch.einsum("bthc,bsc->bhts", q_latent, cache["c_kv"]) +
                  torch.einsum("bthr,bsr->bhts", q_pe, cache["k_pe"])) * self.scale
        S, T = cache["c_kv"].shape[1], x.shape[1]
        causal = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(S - T + 1)
        probs = scores.masked_fill(causal, float("-inf")).softmax(dim=-1)
        out = torch.einsum("bhts,bsc->bthc", probs, cache["c_kv"])
        out = torch.einsum("bthc,hdc->bthd", out, w_uv).flatten(-2)
        return self.o_proj(out)


# ----------------------------------------------------------------------------------------------------
# DeepSeekMoE

class MoEGate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        if cfg.topk_method == "noaux_tc":
            # float32 buffer as HF keeps it; cast with the model (the fixtures run everything in float64).
            self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts))
        else:
            self.e_score_correction_bias = None

    def forward(self, x):
        """x [N, d] -> expert ids [N, K] ascending, weights [N, K] (differentiable), scores [N, E]."""
        cfg = self.cfg
        logits = x @ self.weight.t()
        scores = logits.sigmoid() if cfg.scoring_func == "sigmoid" else logits.softmax(dim=-1)
        with torch.no_grad():
            choice = scores.detach()
            if self.e_score_correction_bias is not None:
                choice = choice + self.e_score_correction_bias
            if cfg.topk_method != "greedy" and cfg.n_group > 1:
                N, G = choice.shape[0], cfg.n_group
                grouped = choice.view(N, G, -1)
                if cfg.topk_method == "noaux_tc":
                    group_scores = grouped.topk(2, dim=-1).values.sum(-1)
                else:  # group_limited_greedy
                    group_scores = grouped.amax(dim=-1)
                kept = group_scores.topk(cfg.topk_group, dim=-1).indices
                keep = torch.zeros(N, G, dtype=torch.bool, device=x.device).scatter_(1, kept, True)
                choice = grouped.masked_fill(~keep[:, :, None], float("-inf")).view(N, -1)
            expert_ids = choice.topk(cfg.num_experts_per_tok, dim=-1).indices.sort(dim=-1).values
        weights = scores.gather(1, expert_ids)
        if cfg.scoring_func == "sigmoid":  # V3: normalise if asked (also for K = 1), then always scale
            if cfg.norm_topk_prob:
                weights = weights / weights.sum(dim=-1, keepdim=True)
            return expert_ids, weights * cfg.routed_scaling_factor, scores
        # V2 (remote modeling_deepseek.py): normalised weights (K > 1) are not scaled, others are.
        if cfg.norm_topk_prob and cfg.num_experts_per_tok > 1:
            return expert_ids, weights / (weights.sum(dim=-1, keepdim=True) + 1e-20), scores
        return expert_ids, weights * cfg.routed_scaling_factor, scores

    def balance_loss(self, scores, expert_ids, batch, seq_len):
        """sum_i f_i P_i per sequence, averaged over the sequences; f_i = E/(K T) #{t : i counted at t}.

        V3 (sigmoid): counted = plain top-K of the unbiased scores (no bias, no group limit),
                      P_i = mean_t s_it / sum_j s_jt.
        V2 (softmax): counted = the actual selection, P_i = mean_t s_it (softmax already sums to 1).
        """
        E, K = self.cfg.n_routed_experts, self.cfg.num_experts_per_tok
        if self.cfg.scoring_func == "sigmoid":
            counted = scores.detach().topk(K, dim=-1).indices
            probs = scores / scores.sum(dim=-1, keepdim=True)
        else:
            counted = expert_ids
            probs = scores
        counts = torch.zeros(batch, E, dtype=scores.dtype, device=scores.device)
        counts.scatter_add_(1, counted.reshape(batch, seq_len * K), torch.ones_like(counts[:, :1]).expand(-1, seq_len * K))
        f = counts * (E / (K * seq_len))
        P = probs.view(batch, seq_len, E).mean(dim=1)
        return (f * P).sum(dim=1).mean()


class MoE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gate = MoEGate(cfg)
        self.experts = nn.ModuleList(SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.n_routed_experts))
        self.shared_experts = (SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
                               if cfg.n_shared_experts else None)
        self.last = None  # {"expert_ids", "load", "balance"} of the last forward

    def forward(self, x):
        B, T, d = x.shape
        flat = x.reshape(B * T, d)
        expert_ids, weights, scores = self.gate(flat)
        K = expert_ids.shape[1]
        slot_expert = expert_ids.reshape(-1)
        slot_token = torch.arange(B * T, device=x.device).repeat_interleave(K)
        slot_weight = weights.reshape(-1, 1)
        load = torch.bincount(slot_expert, minlength=self.cfg.n_routed_experts)
        order = slot_expert.argsort(stable=True)
        out = torch.zeros_like(flat)
        start = 0
        for e, count in enumerate(load.tolist()):  # one GEMM chain per expert over exactly its tokens
            if count == 0:
                continue
            slots = order[start:start + count]
            start += count
            tokens = slot_token[slots]
            # .to(out.dtype): under autocast the expert output is bf16 while the residual stream is fp32
            out = out.index_add(0, tokens, (self.experts[e](flat[tokens]) * slot_weight[slots]).to(out.dtype))
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        self.last = {"expert_ids": expert_ids, "load": load,
                     "balance": self.gate.balance_loss(scores, expert_ids, B, T)}
        return out.view(B, T, d)

    @torch.no_grad()
    def update_expert_bias(self, gamma):
        """b_i += gamma * sign(mean(c) - c_i), c = (token, slot) assignments of the last forward."""
        if self.gate.e_score_correction_bias is None:
            raise RuntimeError("update_expert_bias: this gate has no e_score_correction_bias (topk_method != noaux_tc)")
        load = self.last["load"].to(torch.float64)
        step = gamma * torch.sign(load.mean() - load)
        self.gate.e_score_correction_bias += step.to(self.gate.e_score_correction_bias.dtype)


# ----------------------------------------------------------------------------------------------------
# Decoder layers, MTP modules, the model

class DecoderLayer(nn.Module):
    def __init__(self, cfg, moe):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MLA(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if moe else SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, h, cos, sin, cache=None):
        normed = self.input_layernorm(h)
        attn = self.self_attn(normed, cos, sin) if cache is None else self.self_attn.forward_absorbed(normed, cos, sin, cache)
        h = h + attn
        return h + self.mlp(self.post_attention_layernorm(h))


class SharedHead(nn.Module):
    """MTP output head: its own RMSNorm; the projection is the main lm_head (stored copy: shared_head.head)."""

    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MTPLayer(DecoderLayer):
    """Module k: h_k = layer(eh_proj(cat(enorm(embed(ids[j+k])), hnorm(h_{k-1}[j])))), always MoE."""

    def __init__(self, cfg):
        super().__init__(cfg, moe=True)
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.shared_head = SharedHead(cfg)


class DeepseekV3Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        L = cfg.num_hidden_layers
        self.layers = nn.ModuleList([DecoderLayer(cfg, cfg.is_moe_layer(i)) for i in range(L)] +
                                    [MTPLayer(cfg) for _ in range(cfg.num_nextn_predict_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class DeepseekV3ForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.model = DeepseekV3Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

    # -- construction and checkpoints -----------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self, std=None, generator=None):
        """HF init: linears, embedding and router ~ N(0, std^2); norms 1; gate biases 0."""
        std = self.cfg.initializer_range if std is None else std
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, std, generator=generator)
        for _, b in self.named_buffers():
            b.zero_()

    @property
    def main_layers(self):
        return self.model.layers[:self.cfg.num_hidden_layers]

    @property
    def mtp_layers(self):
        return self.model.layers[self.cfg.num_hidden_layers:]

    def checkpoint_state_dict(self):
        """state_dict plus the MTP layers' stored copies of embed_tokens and lm_head (HF layout)."""
        sd = dict(self.state_dict())
        for k in range(self.cfg.num_nextn_predict_layers):
            prefix = f"model.layers.{self.cfg.num_hidden_layers + k}."
            sd[prefix + "embed_tokens.weight"] = self.model.embed_tokens.weight
            sd[prefix + "shared_head.head.weight"] = self.lm_head.weight
        if self.cfg.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return {k: v.detach() for k, v in sd.items()}

    @torch.no_grad()
    def load_checkpoint(self, tensors):
        """Loads HF-named tensors (any float dtype); the MTP copies must equal the main embedding/head."""
        tensors = dict(tensors)
        head_name = "model.embed_tokens.weight" if self.cfg.tie_word_embeddings else "lm_head.weight"
        for k in range(self.cfg.num_nextn_predict_layers):
            prefix = f"model.layers.{self.cfg.num_hidden_layers + k}."
            for copy_name, main_name in (("embed_tokens.weight", "model.embed_tokens.weight"),
                                         ("shared_head.head.weight", head_name)):
                if prefix + copy_name in tensors:
                    if not torch.equal(tensors.pop(prefix + copy_name), tensors[main_name]):
                        raise ValueError(f"load_checkpoint: {prefix + copy_name} differs from {main_name}")
        own = self.state_dict()
        if self.cfg.tie_word_embeddings:
            own.pop("lm_head.weight")
        missing, unexpected = set(own) - set(tensors), set(tensors) - set(own)
        if missing or unexpected:
            raise ValueError(f"load_checkpoint: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        for name, t in tensors.items():
            if tuple(t.shape) != tuple(own[name].shape):
                raise ValueError(f"load_checkpoint: {name} has shape {list(t.shape)}, model expects {list(own[name].shape)}")
            own[name].copy_(t)

    @classmethod
    def from_pretrained(cls, directory, dtype=torch.float64):
        cfg = DeepseekConfig.from_json_file(os.path.join(directory, "config.json"))
        model = cls(cfg).to(dtype)
        tensors, _ = read_safetensors(os.path.join(directory, "model.safetensors"))
        model.load_checkpoint(tensors)
        return model

    def num_parameters(self):
        """What a checkpoint stores for the main model: parameters and gate-bias buffers, no MTP modules."""
        mtp_prefixes = tuple(f"model.layers.{self.cfg.num_hidden_layers + k}." for k in range(self.cfg.num_nextn_predict_layers))
        return sum(t.numel() for name, t in self.state_dict().items() if not name.startswith(mtp_prefixes))

    def moe_layers(self):
        """[(name, MoE)] for every MoE layer, MTP layers included, named as the checkpoint ('model.layers.N.mlp')."""
        return [(f"model.layers.{i}.mlp", layer.mlp) for i, layer in enumerate(self.model.layers)
                if isinstance(layer.mlp, MoE)]

    # -- forward, loss ----------------------------------------------------------------------------------

    def _rope(self, T, device):
        return rope_cos_sin(self.cfg, torch.arange(T, device=device), self.lm_head.weight.dtype)

    def hidden(self, ids):
        """ids [B,T] -> h_main [B,T,d] after the final norm."""
        cos, sin = self._rope(ids.shape[1], ids.device)
        h = self.model.embed_tokens(ids)
        for layer in self.main_layers:
            h = layer(h, cos, sin)
        return self.model.norm(h)

    def forward(self, ids):
        return self.lm_head(self.hidden(ids))

    def loss(self, ids, aux_loss_alpha=None, mtp_lambda=0.3):
        """ids [B, T+1] -> {"total", "ce", "balance", "mtp"}; total = ce + alpha * balance + lambda * mtp."""
        cfg = self.cfg
        alpha = cfg.aux_loss_alpha if aux_loss_alpha is None else aux_loss_alpha
        T = ids.shape[1] - 1
        V = cfg.vocab_size
        h_main = self.hidden(ids[:, :T])
        ce = F.cross_entropy(self.lm_head(h_main).reshape(-1, V), ids[:, 1:].reshape(-1))
        mtp_losses, h_prev = [], h_main
        for k, layer in enumerate(self.mtp_layers, start=1):
            n = T - k  # positions j with j + k + 1 <= T
            if n <= 0:
                raise ValueError(f"loss: MTP module {k} needs more than {T} input tokens")
            cos, sin = self._rope(n, ids.device)
            x = layer.eh_proj(torch.cat((layer.enorm(self.model.embed_tokens(ids[:, k:k + n])),
                                         layer.hnorm(h_prev[:, :n])), dim=-1))
            h_k = layer(x, cos, sin)
            logits_k = self.lm_head(layer.shared_head.norm(h_k))
            mtp_losses.append(F.cross_entropy(logits_k.reshape(-1, V), ids[:, k + 1:k + 1 + n].reshape(-1)))
            h_prev = h_k
        zero = ce.new_zeros(())
        mtp = torch.stack(mtp_losses).mean() if mtp_losses else zero
        moe = self.moe_layers()
        balance = torch.stack([m.last["balance"] for _, m in moe]).sum() if moe else zero
        return {"total": ce + alpha * balance + mtp_lambda * mtp, "ce": ce, "balance": balance, "mtp": mtp}

    def routing(self):
        """{layer name: (expert ids [N,K] ascending, load [E])} of the last forward of each MoE layer."""
        return {name: (m.last["expert_ids"], m.last["load"]) for name, m in self.moe_layers() if m.last is not None}

    def update_expert_bias(self, gamma):
        for _, m in self.moe_layers():
            m.update_expert_bias(gamma)

    # -- generation -----------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt, max_new_tokens, absorbed_cache=False):
        """Greedy decoding of a 1-D prompt; full recompute, or one token at a time over the latent cache."""
        ids = prompt.reshape(1, -1)
        if not absorbed_cache:
            for _ in range(max_new_tokens):
                next_id = self.forward(ids)[:, -1].argmax(dim=-1, keepdim=True)
                ids = torch.cat((ids, next_id), dim=1)
            return ids[0]
        caches = self.new_latent_caches()
        step_ids = ids
        for _ in range(max_new_tokens):
            next_id = self.forward_cached(step_ids, caches)[:, -1].argmax(dim=-1, keepdim=True)
            ids = torch.cat((ids, next_id), dim=1)
            step_ids = next_id
        return ids[0]

    def new_latent_caches(self):
        return [dict() for _ in self.main_layers]

    def forward_cached(self, ids, caches):
        """Logits of ids [B,T] following the tokens already in caches, through the absorbed attention."""
        start = caches[0]["c_kv"].shape[1] if caches and "c_kv" in caches[0] else 0
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        cos, sin = rope_cos_sin(self.cfg, positions, self.lm_head.weight.dtype)
        h = self.model.embed_tokens(ids)
        for layer, cache in zip(self.main_layers, caches):
            h = layer(h, cos, sin, cache=cache)
        return self.lm_head(self.model.norm(h))


# ----------------------------------------------------------------------------------------------------
# Validation against a fixture directory (the shared dsv3-tiny, or ours): python3 bench/dsv3_torch.py DIR

def adamw_step(model, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
    """One torch.optim.AdamW step on the current gradients; a parameter without one gets zeros."""
    params = list(model.parameters())
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay).step()


def compute_expected(model, input_ids, prompt_ids, mtp_lambda, aux_loss_alpha, new_tokens,
                     gamma=0.001, adamw=None):
    """Everything a fixture's expected.safetensors holds, in the model's dtype (float64 for fixtures)."""
    adamw = adamw or {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}
    out = {}
    T = input_ids.shape[1] - 1
    with torch.no_grad():
        out["logits"] = model(input_ids[:, :T]).float()
    out["greedy_ids"] = model.generate(prompt_ids, new_tokens)  # before the bias update and AdamW change the model
    model.zero_grad(set_to_none=True)
    losses = model.loss(input_ids, aux_loss_alpha=aux_loss_alpha, mtp_lambda=mtp_lambda)
    for key in ("total", "ce", "balance", "mtp"):
        out[f"loss_{key}"] = losses[key].detach().double()
    losses["total"].backward()
    for name, p in model.named_parameters():
        out["grad." + name] = (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().clone()
    for name, (expert_ids, load) in model.routing().items():
        if int(name.split(".")[2]) < model.cfg.num_hidden_layers:
            out["routing." + name] = expert_ids.clone()
        out["load." + name] = load.clone()
    if model.cfg.topk_method == "noaux_tc":
        model.update_expert_bias(gamma)
        for name, b in model.named_buffers():
            out["bias_after." + name] = b.detach().double().clone()
    adamw_step(model, lr=adamw["lr"], betas=tuple(adamw["betas"]), eps=adamw["eps"], weight_decay=adamw["weight_decay"])
    for name, p in model.named_parameters():
        out["after_adamw." + name] = p.detach().double().clone()
    return out


def validate_fixture(directory):
    """Recomputes a fixture in float64 from its weights and prints the largest deviation per key group."""
    torch.set_default_dtype(torch.float64)
    model = DeepseekV3ForCausalLM.from_pretrained(directory, dtype=torch.float64)
    inputs, _ = read_safetensors(os.path.join(directory, "inputs.safetensors"))
    expected, meta = read_safetensors(os.path.join(directory, "expected.safetensors"))
    new_tokens = expected["greedy_ids"].numel() - inputs["prompt_ids"].numel()
    absorbed = model.generate(inputs["prompt_ids"], new_tokens, absorbed_cache=True)
    with torch.no_grad():  # absorbed form: a 20-token prefill, then the rest one token at a time
        ids = inputs["input_ids"][:, :-1]
        caches = model.new_latent_caches()
        cached = torch.cat([model.forward_cached(ids[:, :20], caches)] +
                           [model.forward_cached(ids[:, t:t + 1], caches) for t in range(20, ids.shape[1])], dim=1)
        absorbed_gap = (cached - model(ids)).abs().max().item()
    got = compute_expected(model, inputs["input_ids"], inputs["prompt_ids"], float(meta["mtp_lambda"]),
                           float(meta["aux_loss_alpha"]), new_tokens, gamma=float(meta.get("bias_update_gamma", 0.001)),
                           adamw=json.loads(meta["adamw"]) if "adamw" in meta else None)
    if set(got) != set(expected):
        raise SystemExit(f"key mismatch: only computed {sorted(set(got) - set(expected))[:5]}, "
                         f"only expected {sorted(set(expected) - set(got))[:5]}")
    worst = {}
    for key, want in expected.items():
        group = key.split(".")[0]
        if want.dtype in (torch.int64, torch.int32):
            err = 0.0 if torch.equal(got[key].to(want.dtype), want) else float("inf")
        else:
            err = (got[key].double() - want.double()).abs().max().item()
        if err > worst.get(group, (-1.0, ""))[0]:
            worst[group] = (err, key)
    for group, (err, key) in sorted(worst.items()):
        print(f"{group:14s} max abs error {err:.3e}   ({key})")
    print(f"absorbed latent cache: logits within {absorbed_gap:.1e} of the training form; "
          f"greedy ids {'equal' if torch.equal(absorbed, expected['greedy_ids']) else 'DIFFER from'} greedy_ids")
    return worst


if __name__ == "__main__":
    validate_fixture(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/fixtures/dsv3-tiny")
