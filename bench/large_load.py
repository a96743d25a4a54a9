"""Loads a model directory larger than half of this machine's memory, under a memory limit that
collecting every tensor first could not meet (docs/checkpoints.md, "Memory while loading").

    /usr/bin/python3 bench/large_load.py build/tests/train/load_probe [--gib 12.5] [--dir DIR]

Writes a float32 Llama of about --gib GiB as Hugging Face shards of at most 4 GiB with an index
(random weights, one tensor in memory at a time), then runs tests/train/load_probe.cpp twice, each
in a fresh memory cgroup limited to the model's bytes plus --margin-gib (v1 or v2; needs root):
`stream` (models::from_pretrained) must load, and `collect` (every tensor into a map, then the
model: what loading did before streaming, about twice the model) must not. Prints each run's exit,
peak resident set (VmHWM) and the cgroup's peak charge, which also counts the page cache of the
mapped files (reclaimable, so the limit makes the kernel drop it rather than fail). The directory
is removed at the end unless --keep.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import numpy as np

GIB = 1 << 30


def llama_config(target_bytes):
    """A Llama of fixed width whose layer count brings its float32 bytes closest to target_bytes."""
    hidden, inter, vocab, heads, kv_heads = 3072, 8192, 32000, 24, 8
    head_dim = hidden // heads
    per_layer = 4 * (2 * hidden * hidden + 2 * hidden * kv_heads * head_dim + 3 * hidden * inter + 2 * hidden)
    fixed = 4 * (2 * vocab * hidden + hidden)
    layers = max(1, round((target_bytes - fixed) / per_layer))
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": inter, "vocab_size": vocab,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": head_dim, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "float32",
    }


def tensor_shapes(c):
    h, i, v, kv = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_key_value_heads"] * c["head_dim"]
    shapes = [("model.embed_tokens.weight", [v, h])]
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes += [(p + "input_layernorm.weight", [h]), (p + "self_attn.q_proj.weight", [h, h]),
                   (p + "self_attn.k_proj.weight", [kv, h]), (p + "self_attn.v_proj.weight", [kv, h]),
                   (p + "self_attn.o_proj.weight", [h, h]), (p + "post_attention_layernorm.weight", [h]),
                   (p + "mlp.gate_proj.weight", [i, h]), (p + "mlp.up_proj.weight", [i, h]),
                   (p + "mlp.down_proj.weight", [h, i])]
    return shapes + [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]


def write_directory(path, config, shard_bytes):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shards, current, size = [], [], 0
    for name, shape in tensor_shapes(config):
        nbytes = 4 * int(np.prod(shape))
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape, nbytes))
        size += nbytes
    shards.append(current)
    rng = np.random.default_rng(1234)
    weight_map, total = {}, 0
    for k, shard in enumerate(shards):
        file = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, nbytes in shard:
            header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = file
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        with open(os.path.join(path, file), "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text)
            for name, shape, nbytes in shard:
                if len(shape) == 1:
                    np.ones(shape, np.float32).tofile(f)
                    continue
                for start in range(0, shape[0], 1024):  # rows a block at a time: memory stays small
                    rows = min(1024, shape[0] - start)
                    (rng.standard_normal((rows, shape[1]), np.float32) * 0.02).tofile(f)
        total += offset
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total, len(shards)


def new_cgroup(name, limit):
    """A fresh memory cgroup limited to `limit` bytes; returns (procs file, peak file)."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # v2
        path = f"/sys/fs/cgroup/{name}"
        os.makedirs(path)
        with open(f"{path}/memory.max", "w") as f:
            f.write(str(limit))
        if os.path.exists(f"{path}/memory.swap.max"):  # no swapping out of the limit either
            with open(f"{path}/memory.swap.max", "w") as f:
                f.write("0")
        return path, f"{path}/cgroup.procs", f"{path}/memory.peak"
    path = f"/sys/fs/cgroup/memory/{name}"
    os.makedirs(path)
    with open(f"{path}/memory.limit_in_bytes", "w") as f:
        f.write(str(limit))
    return path, f"{path}/cgroup.procs", f"{path}/memory.max_usage_in_bytes"


def run_limited(probe, mode, directory, limit):
    path, procs, peak = new_cgroup(f"latent-large-load-{os.getpid()}-{mode}", limit)

    def enter():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    start = time.monotonic()
    run = subprocess.run([probe, mode, directory], preexec_fn=enter, capture_output=True, text=True)
    seconds = time.monotonic() - start
    with open(peak) as f:
        charged = int(f.read())
    os.rmdir(path)
    report = dict(zip(run.stdout.split()[::2], map(int, run.stdout.split()[1::2])))
    return run.returncode, report, charged, seconds, run.stderr.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", help="build/tests/train/load_probe")
    parser.add_argument("--gib", type=float, default=12.5, help="float32 model size (default 12.5)")
    parser.add_argument("--margin-gib", type=float, default=1.0, help="memory limit above the model's bytes")
    parser.add_argument("--dir", default="/tmp/latent-large-load")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    with open("/proc/meminfo") as f:
        ram = int(f.readline().split()[1]) * 1024
    config = llama_config(args.gib * GIB)
    start = time.monotonic()
    total, shard_count = write_directory(args.dir, config, 4 * GIB)
    print(f"machine memory {ram / GIB:.1f} GiB; wrote {total / GIB:.2f} GiB of float32 tensors "
          f"({total / ram:.0%} of it) in {shard_count} shards, {config['num_hidden_layers']} layers, "
          f"in {time.monotonic() - start:.0f} s")
    limit = total + int(args.margin_gib * GIB)
    print(f"memory limit per load: {limit / GIB:.2f} GiB (model + {args.margin_gib} GiB)")
    ok = True
    try:
        for mode, should_load in (("stream", True), ("collect", False)):
            code, report, charged, seconds, err = run_limited(args.probe, mode, args.dir, limit)
            rss = f"peak RSS {report['rss_peak'] / GIB:.2f} GiB, " if code == 0 else ""
            print(f"{mode:8} exit {code:3} in {seconds:5.0f} s: {rss}cgroup peak {charged / GIB:.2f} GiB"
                  + (f" ({err.splitlines()[-1]})" if err else ""))
            ok &= (code == 0) == should_load
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    print("streaming loaded within the limit; collecting could not" if ok else "UNEXPECTED: see the exits above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
