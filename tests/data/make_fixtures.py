# Generates latent's own golden fixtures (dsv3-variant, dsv2-softmax, llama-tiny) in float64 from fixed seeds; run with /usr/bin/python3 (Debian's PyTorch).
"""Usage: /usr/bin/python3 tests/data/make_fixtures.py [--check]

Weights are drawn in float64, rounded to float32 and saved as F32 (HF names); every expected value is
then computed in float64 from exactly those rounded weights, like the shared fixture dsv3-tiny.
--check regenerates into memory and compares with the files on disk instead of writing.
tests/data/README.md describes each fixture.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
from dsv3_torch import (DeepseekConfig, DeepseekV3ForCausalLM, compute_expected, read_safetensors,  # noqa: E402
                        write_safetensors)

ADAMW = {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}
GAMMA = 0.001
MTP_LAMBDA = 0.3

# A DeepSeek-V3 the shared fixture does not cover: plain q_proj (q_lora_rank null), one expert group,
# two MTP modules, plain RoPE, unnormalised top-k weights, two shared experts, v_head_dim != nope.
DSV3_VARIANT = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "attention_bias": False,
    "aux_loss_alpha": 0.01, "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 32,
    "intermediate_size": 48, "kv_lora_rank": 8, "max_position_embeddings": 64, "moe_intermediate_size": 4,
    "n_group": 1, "n_routed_experts": 8, "n_shared_experts": 2, "norm_topk_prob": False,
    "num_attention_heads": 2, "num_experts_per_tok": 3, "num_hidden_layers": 3, "num_nextn_predict_layers": 2,
    "q_lora_rank": None, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "rms_norm_eps": 1e-6,
    "rope_scaling": None, "rope_theta": 10000.0, "routed_scaling_factor": 1.5, "scoring_func": "sigmoid",
    "seq_aux": True, "tie_word_embeddings": False, "topk_group": 1, "topk_method": "noaux_tc",
    "v_head_dim": 12, "vocab_size": 256,
}

# DeepSeek-V2 routing: softmax scores, group-limited greedy top-k (group score = best expert), no bias,
# unnormalised weights times routed_scaling_factor, the expert-level balance loss; q-LoRA, YaRN with
# mscale = mscale_all_dim = 0.707 (V2-Lite's value), no MTP.
DSV2_SOFTMAX = {
    "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "attention_bias": False,
    "aux_loss_alpha": 0.01, "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 32,
    "intermediate_size": 64, "kv_lora_rank": 16, "max_position_embeddings": 64, "moe_intermediate_size": 8,
    "n_group": 4, "n_routed_experts": 8, "n_shared_experts": 2, "norm_topk_prob": False,
    "num_attention_heads": 4, "num_experts_per_tok": 3, "num_hidden_layers": 3, "num_nextn_predict_layers": 0,
    "q_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "rms_norm_eps": 1e-6,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32,
                     "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
    "rope_theta": 10000.0, "routed_scaling_factor": 2.0, "scoring_func": "softmax", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 2, "topk_method": "group_limited_greedy", "v_head_dim": 8,
    "vocab_size": 256,
}

LLAMA_TINY = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False, "mlp_bias": False,
    "hidden_act": "silu", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "rope_scaling": None, "vocab_size": 256, "tie_word_embeddings": False,
    "max_position_embeddings": 64, "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02,
    "torch_dtype": "float32",
}


@torch.no_grad()
def randomize(module, seed, std=0.1, norm_std=0.1, bias_std=0.05):
    """Weights ~ N(0, std^2), norm weights ~ 1 + N(0, norm_std^2), gate biases ~ N(0, bias_std^2),
    all rounded to float32 so the float64 reference sees exactly the stored values."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters()):
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        p.copy_(1.0 + norm_std * noise if name.endswith("norm.weight") else std * noise)
    for name, b in sorted(module.named_buffers()):
        b.copy_(bias_std * torch.randn(b.shape, generator=gen, dtype=torch.float64))
    for t in list(module.parameters()) + list(module.buffers()):
        t.copy_(t.float().double())


def random_ids(seed, shape, vocab):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.int64)


# Routing and greedy decisions must survive float32 rounding (a correct f32 model lands ~3e-6 from the
# float64 logits), so every decision the fixtures pin down keeps at least this gap to the runner-up.
MIN_MARGIN = 1e-4


def kth_gap(values, k):
    """Per row: k-th largest minus (k+1)-th largest (inf when there are only k finite candidates)."""
    top = values.topk(min(k + 1, values.shape[-1]), dim=-1).values
    if top.shape[-1] == k:
        return torch.full(top.shape[:-1], float("inf"), dtype=top.dtype)
    return torch.where(torch.isinf(top[:, k]), torch.full_like(top[:, k], float("inf")), top[:, k - 1] - top[:, k])


@torch.no_grad()
def decision_margins(model, runs):
    """Smallest gap of every discrete choice made while running each callable in runs: expert selection
    (after bias and group masking), group selection, the plain top-K of the V3 balance loss."""
    cfg, K = model.cfg, model.cfg.num_experts_per_tok
    gaps = {"selection": [], "group": [], "balance top-K": []}

    def hook(gate, args, _out):
        x = args[0]
        logits = x @ gate.weight.t()
        s = logits.sigmoid() if cfg.scoring_func == "sigmoid" else logits.softmax(-1)
        choice = s + gate.e_score_correction_bias if gate.e_score_correction_bias is not None else s
        if cfg.topk_method != "greedy" and cfg.n_group > 1:
            grouped = choice.view(x.shape[0], cfg.n_group, -1)
            group_scores = grouped.topk(2, -1).values.sum(-1) if cfg.topk_method == "noaux_tc" else grouped.amax(-1)
            gaps["group"].append(kth_gap(group_scores, cfg.topk_group).min())
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(
                1, group_scores.topk(cfg.topk_group, -1).indices, True)
            choice = grouped.masked_fill(~keep[:, :, None], float("-inf")).view(x.shape[0], -1)
        gaps["selection"].append(kth_gap(choice, K).min())
        if cfg.scoring_func == "sigmoid":
            gaps["balance top-K"].append(kth_gap(s, K).min())

    handles = [moe.gate.register_forward_hook(hook) for _, moe in model.moe_layers()]
    try:
        for run in runs:
            run()
    finally:
        for h in handles:
            h.remove()
    return {k: min(v).item() for k, v in gaps.items() if v}


def greedy_margin(forward, greedy_ids, prompt_len):
    """Smallest top-1 minus top-2 logit over the generated positions (causal: one forward covers all steps)."""
    with torch.no_grad():
        logits = forward(greedy_ids[None, :-1])[0, prompt_len - 1:]
    return kth_gap(logits, 1).min().item()


def require_margins(fixture, margins):
    for what, gap in margins.items():
        if gap < MIN_MARGIN:
            raise AssertionError(f"{fixture}: {what} margin {gap:.2e} < {MIN_MARGIN:.0e}; choose another seed")


def dump_config(config):
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


# ----------------------------------------------------------------------------------------------------
# DeepSeek fixtures

def make_deepseek(name, config, seed, starved_expert=None, batch=2, seq=32, prompt_len=8, new_tokens=16):
    """-> {file name: content}: config.json, model.safetensors, inputs.safetensors, expected.safetensors.

    starved_expert = (layer, expert): that expert's correction bias is set to -1, far below any
    competitor's sigmoid score, so it receives no token (zero gradients, bias raised by gamma).
    """
    torch.set_default_dtype(torch.float64)
    cfg = DeepseekConfig(config)
    model = DeepseekV3ForCausalLM(cfg).double()
    randomize(model, seed)
    if starved_expert is not None:
        layer, expert = starved_expert
        with torch.no_grad():
            model.model.layers[layer].mlp.gate.e_score_correction_bias[expert] = -1.0
    inputs = {"input_ids": random_ids(seed + 1, (batch, seq + 1), cfg.vocab_size)}
    inputs["prompt_ids"] = inputs["input_ids"][0, :prompt_len].clone()
    weights = {k: v.float() for k, v in model.checkpoint_state_dict().items()}
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    expected = compute_expected(model, inputs["input_ids"], inputs["prompt_ids"], MTP_LAMBDA, cfg.aux_loss_alpha,
                                new_tokens, gamma=GAMMA, adamw=ADAMW)
    model.load_state_dict(reference)  # undo the bias update and the AdamW step
    margins = decision_margins(model, [lambda: model.loss(inputs["input_ids"]),
                                       lambda: model(expected["greedy_ids"][None, :-1])])
    margins["greedy"] = greedy_margin(model, expected["greedy_ids"], prompt_len)
    if starved_expert is not None and expected[f"load.model.layers.{starved_expert[0]}.mlp"][starved_expert[1]] != 0:
        raise AssertionError(f"{name}: expert {starved_expert} still receives tokens")
    require_margins(name, margins)
    meta = {"aux_loss_alpha": str(cfg.aux_loss_alpha), "mtp_lambda": str(MTP_LAMBDA), "adamw": json.dumps(ADAMW)}
    if cfg.topk_method == "noaux_tc":
        meta["bias_update_gamma"] = str(GAMMA)
    return {"config.json": dump_config(config), "model.safetensors": (weights, {"format": "pt"}),
            "inputs.safetensors": (inputs, None), "expected.safetensors": (expected, meta)}


# ----------------------------------------------------------------------------------------------------
# Llama (HF LlamaForCausalLM layout, HF's rotate_half RoPE on HF-layout q/k rows)

class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half_rope(x, cos, sin):
    """HF Llama: pairs (i, i + D/2) rotate by angle p * theta^(-2i/D); x [B,H,T,D], cos/sin [T,D/2]."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def adjacent_pair_rope(x, cos, sin):
    """latent's convention: pairs (2i, 2i+1) rotate by angle p * theta^(-2i/D)."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def hf_rows_to_adjacent(weight, heads, head_dim):
    """Row h*D + 2i <- HF row h*D + i, row h*D + 2i + 1 <- HF row h*D + i + D/2 (q_proj / k_proj)."""
    return weight.view(heads, 2, head_dim // 2, -1).transpose(1, 2).reshape(heads * head_dim, -1)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        d, H, KV, D = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.q_proj = nn.Linear(d, H * D, bias=False)
        self.k_proj = nn.Linear(d, KV * D, bias=False)
        self.v_proj = nn.Linear(d, KV * D, bias=False)
        self.o_proj = nn.Linear(H * D, d, bias=False)

    def forward(self, x, cos, sin, rope):
        c = self.c
        B, T, _ = x.shape
        H, KV, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        q = rope(self.q_proj(x).view(B, T, H, D).transpose(1, 2), cos, sin)
        k = rope(self.k_proj(x).view(B, T, KV, D).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(B, T, KV, D).transpose(1, 2)
        # GQA: key/value head j serves query heads j*H/KV .. (j+1)*H/KV - 1.
        k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        out = scores.masked_fill(causal, float("-inf")).softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * D))


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(c["intermediate_size"], c["hidden_size"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = LlamaMLP(c)

    def forward(self, h, cos, sin, rope):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, rope)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(LlamaDecoderLayer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = LlamaRMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    def __init__(self, c, rope=rotate_half_rope):
        super().__init__()
        self.c, self.rope = c, rope
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, ids):
        D = self.c["head_dim"]
        inv_freq = self.c["rope_theta"] ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
        angles = torch.arange(ids.shape[1], dtype=torch.float64)[:, None] * inv_freq[None, :]
        cos, sin = angles.cos().to(self.lm_head.weight.dtype), angles.sin().to(self.lm_head.weight.dtype)
        h = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            h = layer(h, cos, sin, self.rope)
        return self.lm_head(self.model.norm(h))

    @torch.no_grad()
    def generate(self, prompt, max_new_tokens):
        ids = prompt.reshape(1, -1)
        for _ in range(max_new_tokens):
            ids = torch.cat((ids, self.forward(ids)[:, -1].argmax(-1, keepdim=True)), dim=1)
        return ids[0]


def make_llama(config, seed, batch=2, seq=16, prompt_len=8, new_tokens=12):
    torch.set_default_dtype(torch.float64)
    model = LlamaForCausalLM(config).double()
    randomize(model, seed)
    ids = random_ids(seed + 1, (batch, seq), config["vocab_size"])
    prompt = ids[0, :prompt_len].clone()
    expected = {}
    logits = model(ids)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, config["vocab_size"]), ids[:, 1:].reshape(-1))
    loss.backward()
    expected["logits"] = logits.detach().float()
    expected["loss_ce"] = loss.detach()
    for name, p in model.named_parameters():
        expected["grad." + name] = p.grad.detach().clone()
    expected["greedy_ids"] = model.generate(prompt, new_tokens)

    # The README's claim, checked: permuting q/k rows makes adjacent-pair RoPE give the same logits.
    adjacent = LlamaForCausalLM(config, rope=adjacent_pair_rope).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    H, KV, D = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    for name in state:
        if name.endswith("q_proj.weight"):
            state[name] = hf_rows_to_adjacent(state[name], H, D)
        elif name.endswith("k_proj.weight"):
            state[name] = hf_rows_to_adjacent(state[name], KV, D)
    adjacent.load_state_dict(state)
    with torch.no_grad():
        gap = (adjacent(ids) - logits).abs().max().item()
    if gap > 1e-12:
        raise AssertionError(f"llama-tiny: adjacent-pair model with permuted q/k rows differs by {gap}")

    require_margins("llama-tiny", {"greedy": greedy_margin(model, expected["greedy_ids"], prompt_len)})

    weights = {k: v.float() for k, v in model.state_dict().items()}
    meta = {"loss": "mean next-token cross-entropy of logits[:, :-1] against input_ids[:, 1:]",
            "rope": "HF rotate_half on HF-layout q_proj/k_proj rows"}
    return {"config.json": dump_config(config), "model.safetensors": (weights, {"format": "pt"}),
            "inputs.safetensors": ({"input_ids": ids, "prompt_ids": prompt}, None),
            "expected.safetensors": (expected, meta)}


# ----------------------------------------------------------------------------------------------------

FIXTURES = {
    "dsv3-variant": lambda: make_deepseek("dsv3-variant", DSV3_VARIANT, seed=3002, starved_expert=(2, 6)),
    "dsv2-softmax": lambda: make_deepseek("dsv2-softmax", DSV2_SOFTMAX, seed=2005),
    "llama-tiny": lambda: make_llama(LLAMA_TINY, seed=1003),
}


def write_fixture(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, content in files.items():
        path = os.path.join(directory, name)
        if isinstance(content, str):
            with open(path, "w") as f:
                f.write(content)
        else:
            write_safetensors(path, *content)
        print(f"  {path}: {os.path.getsize(path):,} bytes")


def check_fixture(directory, files):
    """True if the files on disk hold exactly what a fresh generation gives."""
    same = True
    for name, content in files.items():
        path = os.path.join(directory, name)
        if isinstance(content, str):
            ok = open(path).read() == content
        else:
            disk, _ = read_safetensors(path)
            ok = disk.keys() == content[0].keys() and all(torch.equal(disk[k], content[0][k].detach().cpu())
                                                          for k in disk)
        print(f"  {path}: {'identical' if ok else 'DIFFERS'}")
        same = same and ok
    return same


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    parser.add_argument("names", nargs="*", default=sorted(FIXTURES), help="fixtures to make (default: all)")
    args = parser.parse_args()
    ok = True
    for name in args.names:
        if name not in FIXTURES:
            raise SystemExit(f"make_fixtures: unknown fixture '{name}' (have {sorted(FIXTURES)})")
        print(name)
        files = FIXTURES[name]()
        directory = os.path.join(HERE, name)
        if args.check:
            ok = check_fixture(directory, files) and ok
        else:
            write_fixture(directory, files)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
