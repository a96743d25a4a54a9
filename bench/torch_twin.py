# PyTorch twin of latent's training benchmark (bench/train_step.cpp): the same DeepSeek-V3 preset, batch and full training step, timed the same way, for a side-by-side number.
"""Usage: /usr/bin/python3 bench/torch_twin.py --preset small --batch 8 --seq 256 --steps 10 --warmup 2
                                             [--threads 1] [--openblas-threads 2] [--precision fp32|bf16]

One step = forward + loss (ce + 1e-4 * balance + 0.3 * mtp) + backward + clip_grad_norm(1.0)
+ AdamW(lr 3e-4, betas (0.9, 0.95), weight decay 0.1) + update_expert_bias(1e-3), in float32, on
random byte tokens. With --precision bf16 the forward and loss run under
torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's mixed precision: bf16 matmuls through its
bundled oneDNN, fp32 master weights and optimizer), and the GEMM peak is measured in bf16 too. Prints, one per line: step_time_median_s, tokens_per_s, model_flops_utilization,
peak_rss_mb (plus the settings and counts they rest on).

Threads: ATen's own kernels use torch.set_num_threads(--threads); matrix products go to OpenBLAS,
whose pool is sized by OPENBLAS_NUM_THREADS (--openblas-threads, set before torch loads it, and
again through openblas_set_num_threads). On this 2-core machine PyTorch is fastest with
--threads 1 --openblas-threads 2, the defaults.
"""
import argparse
import ctypes
import os
import resource
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "small"), default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence (the loss reads seq + 1 ids)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (ATen intra-op threads)")
    p.add_argument("--openblas-threads", type=int, default=int(os.environ.get("OPENBLAS_NUM_THREADS", "2")),
                   help="OpenBLAS threads for GEMM (default: $OPENBLAS_NUM_THREADS, else 2)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                   help="fp32, or bf16 autocast for forward and loss")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in ("batch", "seq", "steps", "threads", "openblas_threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


ARGS = parse_args()
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.openblas_threads)  # read once, when torch loads OpenBLAS

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dsv3_torch import DeepseekConfig, DeepseekV3ForCausalLM  # noqa: E402

AUX_LOSS_ALPHA, MTP_LAMBDA, BIAS_GAMMA = 1e-4, 0.3, 1e-3
EXPECTED_PARAMETERS = {"tiny": 207_968, "small": 6_552_624}  # docs/deepseek_v3.md, "Presets"


def openblas():
    """The OpenBLAS torch linked (same soname, so the same loaded library), or None."""
    for name in ("libopenblas.so.0", "libopenblas.so"):
        try:
            lib = ctypes.CDLL(name)
            lib.openblas_get_num_threads.restype = ctypes.c_int
            return lib
        except (OSError, AttributeError):
            continue
    return None


def linear_weights_per_token(cfg):
    """Linear-layer weights one token passes through: attention, dense MLP or gate + activated experts
    + shared experts, per main layer; eh_proj + one MoE layer per MTP module; lm_head once per head use."""
    d, H = cfg.hidden_size, cfg.num_attention_heads
    q = cfg.q_lora_rank * (d + H * cfg.qk_head_dim) if cfg.q_lora_rank else d * H * cfg.qk_head_dim
    attention = (q + d * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
                 + cfg.kv_lora_rank * H * (cfg.qk_nope_head_dim + cfg.v_head_dim) + H * cfg.v_head_dim * d)
    dense = 3 * d * cfg.intermediate_size
    moe = d * cfg.n_routed_experts + 3 * d * cfg.moe_intermediate_size * (cfg.num_experts_per_tok + cfg.n_shared_experts)
    head = d * cfg.vocab_size
    main = sum(attention + (moe if cfg.is_moe_layer(i) else dense) for i in range(cfg.num_hidden_layers)) + head
    mtp = cfg.num_nextn_predict_layers * (2 * d * d + attention + moe + head)
    return main + mtp


def model_flops_per_token(cfg, seq):
    """6 x linear weights (forward 2 + backward 4) + 6 x layers x T x heads x (qk + v) for attention
    scores and values (the MTP layers counted as layers, over the full T)."""
    layers = cfg.num_hidden_layers + cfg.num_nextn_predict_layers
    attention = 6 * layers * seq * cfg.num_attention_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    return 6 * linear_weights_per_token(cfg) + attention


def gemm_peak_flops(dtype, repeats=20):
    """Best rate of torch.mm on [2048, 256] x [256, 768] in dtype under the current thread settings."""
    a, b = torch.randn(2048, 256).to(dtype), torch.randn(256, 768).to(dtype)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048 * 256 * 768 / best


def main():
    torch.set_num_threads(ARGS.threads)
    blas = openblas()
    if blas is not None:
        blas.openblas_set_num_threads(ARGS.openblas_threads)
    blas_threads = blas.openblas_get_num_threads() if blas is not None else "unknown (OpenBLAS not found)"
    print(f"threads: torch.set_num_threads({ARGS.threads}) -> torch.get_num_threads() = {torch.get_num_threads()}; "
          f"OPENBLAS_NUM_THREADS={ARGS.openblas_threads} -> openblas_get_num_threads() = {blas_threads}")

    torch.manual_seed(ARGS.seed)
    cfg = DeepseekConfig.preset(ARGS.preset)
    if ARGS.seq > cfg.max_position_embeddings:  # positions 0 .. seq-1
        raise SystemExit(f"torch_twin: --seq {ARGS.seq} exceeds max_position_embeddings {cfg.max_position_embeddings}")
    model = DeepseekV3ForCausalLM(cfg).float()
    n_params = model.num_parameters()
    assert n_params == EXPECTED_PARAMETERS[ARGS.preset], f"{ARGS.preset}: {n_params} parameters"
    flops_per_token = model_flops_per_token(cfg, ARGS.seq)
    if ARGS.preset == "small" and ARGS.seq == 256:
        assert round(flops_per_token / 1e6, 1) == 27.9, flops_per_token  # the small preset's forward FLOPs per token
    print(f"model: preset {ARGS.preset}, {n_params:,} parameters in the main model, "
          f"{sum(p.numel() for p in model.parameters()):,} trained (MTP included)")
    print(f"model_flops_per_token: {flops_per_token:,} ({flops_per_token / 1e6:.1f} MFLOP at T={ARGS.seq})")

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)
    data = torch.Generator().manual_seed(ARGS.seed + 1)

    def step():
        ids = torch.randint(0, cfg.vocab_size, (ARGS.batch, ARGS.seq + 1), generator=data)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=ARGS.precision == "bf16"):
            losses = model.loss(ids, aux_loss_alpha=AUX_LOSS_ALPHA, mtp_lambda=MTP_LAMBDA)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.update_expert_bias(BIAS_GAMMA)
        return time.perf_counter() - start, losses["total"].item()

    for i in range(ARGS.warmup):
        seconds, loss = step()
        print(f"warmup {i + 1}/{ARGS.warmup}: {seconds:.3f} s, loss {loss:.4f}")
    times = []
    for i in range(ARGS.steps):
        seconds, loss = step()
        times.append(seconds)
        print(f"step {i + 1}/{ARGS.steps}: {seconds:.3f} s, loss {loss:.4f}")

    median = statistics.median(times)
    tokens_per_s = ARGS.batch * ARGS.seq / median
    peak = gemm_peak_flops(torch.float32)
    print(f"sgemm_peak_gflops: {peak / 1e9:.2f} (torch.mm 2048x256x768 f32, best of 20)")
    if ARGS.precision == "bf16":
        peak = gemm_peak_flops(torch.bfloat16)
        print(f"bf16_gemm_peak_gflops: {peak / 1e9:.2f} (torch.mm 2048x256x768 bf16, best of 20)")
    print(f"step_time_median_s: {median:.4f}")
    print(f"tokens_per_s: {tokens_per_s:.1f}")
    print(f"model_flops_utilization: {flops_per_token * tokens_per_s / peak:.4f} (of the {ARGS.precision} peak)")
    print(f"peak_rss_mb: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")


if __name__ == "__main__":
    main()
