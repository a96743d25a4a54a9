"""Writes tests/data/dsv3-published/: a small DeepSeek-V3 in the layout deepseek-ai publishes (FP8 E4M3
linear weights with float32 block scales "<name>_scale_inv", BF16 everything else, three shards and
model.safetensors.index.json) plus what the PyTorch twin (bench/dsv3_torch.py) computes from exactly
those stored values, in float64: logits, the loss terms and greedy ids (docs/checkpoints.md).

    /usr/bin/python3 tests/data/make_published.py           # (re)write the directory
    /usr/bin/python3 tests/data/make_published.py --check   # regenerate in memory, compare with the files

PyTorch 1.13 has no float8 dtype, so the E4M3 codes are produced here by round-to-nearest-even over
the format's 127 non-negative finite values (docs/checkpoints.md, "Tensor dtypes").
"""
import argparse
import json
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
sys.path.insert(0, HERE)
from dsv3_torch import DeepseekConfig, DeepseekV3ForCausalLM, write_safetensors  # noqa: E402
from make_fixtures import (decision_margins, dump_config, greedy_margin, random_ids, randomize,  # noqa: E402
                           require_margins)

OUT = os.path.join(HERE, "dsv3-published")
BLOCK = [16, 16]
SEED = 4001
MTP_LAMBDA = 0.3

# Dimensions chosen so that most linear weights span several [16, 16] blocks and end in partial ones
# (40 = 16 + 16 + 8, 24 = 16 + 8, 56 = 3 * 16 + 8).
CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "attention_bias": False,
    "aux_loss_alpha": 0.01, "first_k_dense_replace": 1, "hidden_act": "silu", "hidden_size": 40,
    "intermediate_size": 56, "kv_lora_rank": 20, "max_position_embeddings": 64, "moe_intermediate_size": 24,
    "n_group": 2, "n_routed_experts": 4, "n_shared_experts": 1, "norm_topk_prob": True,
    "num_attention_heads": 2, "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_nextn_predict_layers": 1,
    "q_lora_rank": 24, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "rms_norm_eps": 1e-6,
    "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 32,
                     "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
    "rope_theta": 10000.0, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 1, "topk_method": "noaux_tc", "v_head_dim": 8,
    "vocab_size": 256, "torch_dtype": "bfloat16", "transformers_version": "4.33.1",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": BLOCK},
}


# ----------------------------------------------------------------------------------------------------
# E4M3: bias 7, subnormals m/8 * 2^-6 at exponent 0, no infinities, 0x7F/0xFF NaN, largest 448.

def e4m3_values():
    """The values of codes 0x00..0x7E (non-negative, finite), ascending with the code."""
    values = []
    for code in range(0x7F):
        exponent, mantissa = code >> 3, code & 7
        values.append(mantissa / 8 * 2.0 ** -6 if exponent == 0 else (1 + mantissa / 8) * 2.0 ** (exponent - 7))
    return torch.tensor(values, dtype=torch.float64)


def e4m3_encode(x):
    """float64 tensor with |x| <= 448 -> uint8 codes, round to nearest, ties to the even code."""
    table = e4m3_values()
    magnitude = x.abs().clamp(max=448.0)
    upper = torch.bucketize(magnitude, table).clamp(max=len(table) - 1)  # first value >= magnitude
    lower = (upper - 1).clamp(min=0)
    below, above = magnitude - table[lower], table[upper] - magnitude
    pick_upper = (above < below) | ((above == below) & (upper % 2 == 0))
    code = torch.where(pick_upper, upper, lower)
    sign = (x < 0) | ((x == 0) & (torch.copysign(torch.ones_like(x), x) < 0))
    return (code + 128 * sign.long()).to(torch.uint8)


def e4m3_decode(codes):
    table = e4m3_values()
    c = codes.long()
    return torch.where(c >= 128, -table[c % 128], table[c % 128])


def quantize_blocks(w):
    """w [R, C] float64 -> (codes uint8 [R, C], scale_inv float32 [ceil(R/b0), ceil(C/b1)]) with each
    block's largest magnitude mapped to 448, as DeepSeek's quantiser does."""
    R, C = w.shape
    b0, b1 = BLOCK
    rows, cols = -(-R // b0), -(-C // b1)
    scale = torch.empty(rows, cols, dtype=torch.float32)
    codes = torch.empty(R, C, dtype=torch.uint8)
    for i in range(rows):
        for j in range(cols):
            block = w[i * b0:(i + 1) * b0, j * b1:(j + 1) * b1]
            s = torch.tensor(float(block.abs().max()) / 448.0, dtype=torch.float32)
            scale[i, j] = s
            codes[i * b0:(i + 1) * b0, j * b1:(j + 1) * b1] = e4m3_encode(block / s.double())
    return codes, scale


def dequantize_blocks(codes, scale):
    """What a loader computes: code value times its block's scale, rounded once to float32."""
    b0, b1 = BLOCK
    expanded = scale.double().repeat_interleave(b0, 0).repeat_interleave(b1, 1)[:codes.shape[0], :codes.shape[1]]
    return (e4m3_decode(codes) * expanded).float()


def is_fp8_linear(name, t):
    return t.dim() == 2 and (name.endswith("_proj.weight") or name.endswith("_mqa.weight"))


# ----------------------------------------------------------------------------------------------------
# Files

def raw_safetensors(entries, metadata):
    """entries: {name: (dtype string, shape, bytes)} -> file bytes (name order, header padded to 8)."""
    header, data = {}, b""
    for name in sorted(entries):
        dtype, shape, raw = entries[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def published_checkpoint(model):
    """The model's HF tensors in the published layout -> ({name: (dtype, shape, bytes)}, {name: stored value})."""
    entries, stored = {}, {}
    for name, t in sorted(model.checkpoint_state_dict().items()):
        if is_fp8_linear(name, t):
            codes, scale = quantize_blocks(t.double())
            entries[name] = ("F8_E4M3", t.shape, codes.numpy().tobytes())
            entries[name + "_scale_inv"] = ("F32", scale.shape, scale.numpy().tobytes())
            stored[name] = dequantize_blocks(codes, scale)
        else:
            b = t.to(torch.bfloat16)
            entries[name] = ("BF16", t.shape, b.view(torch.int16).numpy().tobytes())
            stored[name] = b.float()
    return entries, stored


def make():
    torch.set_default_dtype(torch.float64)
    cfg = DeepseekConfig(CONFIG)
    model = DeepseekV3ForCausalLM(cfg).double()
    randomize(model, SEED)
    entries, stored = published_checkpoint(model)
    model.load_checkpoint({k: v.double() for k, v in stored.items()})  # the twin runs on the stored values

    input_ids = random_ids(SEED + 1, (2, 17), cfg.vocab_size)
    prompt = input_ids[0, :6].clone()
    with torch.no_grad():
        logits = model(input_ids[:, :16])
        losses = model.loss(input_ids, mtp_lambda=MTP_LAMBDA)
        greedy = model.generate(prompt, 8)
    margins = decision_margins(model, [lambda: model.loss(input_ids), lambda: model(greedy[None, :-1])])
    margins["greedy"] = greedy_margin(model, greedy, len(prompt))
    require_margins("dsv3-published", margins)

    names = sorted(entries)
    shards = [names[i::3] for i in range(3)]  # scales may land in another shard than their weight
    files, weight_map = {}, {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-00003.safetensors"
        files[file] = raw_safetensors({n: entries[n] for n in shard}, {"format": "pt"})
        weight_map.update({n: file for n in shard})
    total = sum(len(raw) for _, _, raw in entries.values())
    files["model.safetensors.index.json"] = (json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                        indent=2, sort_keys=True) + "\n").encode()
    files["config.json"] = dump_config(CONFIG).encode()
    expected = {"logits": logits.float(), "greedy_ids": greedy}
    for key in ("total", "ce", "balance", "mtp"):
        expected[f"loss_{key}"] = losses[key].detach().double()
    return files, {"input_ids": input_ids, "prompt_ids": prompt}, expected


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = parser.parse_args()
    files, inputs, expected = make()
    os.makedirs(OUT, exist_ok=True)
    scratch = OUT if not args.check else os.path.join(OUT, ".check")
    os.makedirs(scratch, exist_ok=True)
    write_safetensors(os.path.join(scratch, "inputs.safetensors"), inputs)
    write_safetensors(os.path.join(scratch, "expected.safetensors"), expected, {"mtp_lambda": str(MTP_LAMBDA)})
    for name, data in files.items():
        with open(os.path.join(scratch, name), "wb") as f:
            f.write(data)
    if args.check:
        differ = [n for n in sorted(os.listdir(scratch))
                  if open(os.path.join(scratch, n), "rb").read() != open(os.path.join(OUT, n), "rb").read()]
        for n in os.listdir(scratch):
            os.remove(os.path.join(scratch, n))
        os.rmdir(scratch)
        print("identical" if not differ else f"differ: {differ}")
        sys.exit(1 if differ else 0)
    print(f"wrote {OUT}: {sorted(os.listdir(OUT))}")


if __name__ == "__main__":
    main()
