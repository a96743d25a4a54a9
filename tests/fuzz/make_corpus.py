#!/usr/bin/env python3
"""Writes the hand-made seed inputs of tests/fuzz/corpus/: small valid files and one invalid file per
rule the readers enforce. Run from anywhere; it writes next to itself. The valid optimizer_state and
model_dir seeds come from latent itself (README.md says how) and are read here to derive their
invalid variants."""
import json
import math
import shutil
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
DATA = HERE.parent / "data"


def put(target, name, content):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode())


def safetensors(header, data=b"", raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def parse_safetensors(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def build(tensors, metadata=None):
    """tensors: name -> (dtype, shape, bytes); laid out in name order, as latent writes them."""
    header, data = ({"__metadata__": metadata} if metadata else {}), b""
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return safetensors(header, data)


def safetensors_seeds():
    # The unit tests' malformed files (tests/data/safetensors/make_bad_files.py) are seeds as they are.
    for path in sorted((DATA / "safetensors").glob("bad_*.safetensors")):
        put("safetensors", path.name, path.read_bytes())
    put("safetensors", "valid_mixed.safetensors", (DATA / "safetensors" / "good_mixed.safetensors").read_bytes())
    halves = struct.pack("<4H", 0x3C00, 0x0001, 0x7C00, 0xFE00)  # 1, smallest subnormal, inf, NaN
    put("safetensors", "valid_half.safetensors",
        build({"bf16": ("BF16", [2, 2], halves), "f16": ("F16", [4], halves),
               "empty": ("F32", [0, 3], b""), "scalar": ("I64", [], struct.pack("<q", -7))}))
    put("safetensors", "valid_metadata_only.safetensors", safetensors({"__metadata__": {"format": "pt"}}))
    f32 = struct.pack("<2f", 1.0, 2.0)
    # Declared sizes far beyond the file: refused before anything is allocated.
    put("safetensors", "bad_huge_shape.safetensors",
        safetensors({"t": {"dtype": "F32", "shape": [1 << 31, 1 << 31], "data_offsets": [0, 1 << 64 - 1]}}, f32))
    put("safetensors", "bad_huge_length.safetensors", struct.pack("<Q", (1 << 64) - 1) + b"{}")
    put("safetensors", "bad_offsets_float.safetensors",
        safetensors({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8.0]}}, f32))
    put("safetensors", "bad_offsets_huge_float.safetensors",
        safetensors({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 1e300]}}, f32))
    put("safetensors", "bad_nan_literal.safetensors",
        safetensors(None, f32, raw_header=b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[NaN,8]}}'))
    put("safetensors", "bad_same_offsets.safetensors",
        safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, f32))
    put("safetensors", "bad_truncated_data.safetensors",
        safetensors({"t": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]}}, f32))
    put("safetensors", "bad_nested.safetensors", safetensors(None, b"", raw_header=b"[" * 2000 + b"]" * 2000))


def json_seeds(target, valid, rules):
    """valid: name -> config dict; rules: name -> (key, value or DELETE)."""
    for name, config in valid.items():
        put(target, f"valid_{name}.json", json.dumps(config, indent=2))
    base = next(iter(valid.values()))
    for name, edits in rules.items():
        config = dict(base)
        for key, value in edits.items():
            if value is DELETE:
                config.pop(key, None)
            else:
                config[key] = value
        put(target, f"bad_{name}.json", json.dumps(config, separators=(",", ":")).replace('"__INF__"', "1e400"))


DELETE = object()


def config_seeds():
    tiny = json.loads((DATA / "dsv3-tiny" / "config.json").read_text())
    json_seeds("deepseek_v3_config",
               {"dsv3_tiny": tiny, "dsv2_softmax": json.loads((DATA / "dsv2-softmax" / "config.json").read_text()),
                "variant": json.loads((DATA / "dsv3-variant" / "config.json").read_text())},
               {"missing_vocab": {"vocab_size": DELETE}, "string_size": {"hidden_size": "64"},
                "float_size": {"hidden_size": 64.5}, "zero_hidden": {"hidden_size": 0},
                "negative_heads": {"num_attention_heads": -4}, "experts_not_divisible": {"n_routed_experts": 6},
                "topk_group_above_n_group": {"topk_group": 5}, "experts_beyond_groups": {"num_experts_per_tok": 5},
                "odd_rope_dim": {"qk_rope_head_dim": 7}, "kv_lora_rank_zero": {"kv_lora_rank": 0},
                "hidden_1e12": {"hidden_size": 10**12}, "layers_1e18": {"num_hidden_layers": 10**18},
                "sizes_overflow": {"hidden_size": 2**62, "vocab_size": 2**62},
                "positions_1e15": {"max_position_embeddings": 10**15},
                "rope_theta_infinite": {"rope_theta": "__INF__"}, "eps_infinite": {"rms_norm_eps": "__INF__"},
                "rope_scaling_string": {"rope_scaling": "yarn"}, "not_sigmoid": {"scoring_func": "relu"},
                "attention_bias": {"attention_bias": True}})
    put("deepseek_v3_config", "bad_not_object.json", "[1, 2, 3]")
    put("deepseek_v3_config", "bad_duplicate_key.json", '{"vocab_size": 256, "vocab_size": 512}')
    put("deepseek_v3_config", "bad_truncated.json", (DATA / "dsv3-tiny" / "config.json").read_text()[:200])

    llama = json.loads((DATA / "llama-tiny" / "config.json").read_text())
    json_seeds("llama_config", {"llama_tiny": llama},
               {"missing_heads": {"num_attention_heads": DELETE}, "zero_kv_heads": {"num_key_value_heads": 0},
                "kv_heads_not_dividing": {"num_key_value_heads": 3}, "odd_head_dim": {"head_dim": 7},
                "hidden_1e12": {"hidden_size": 10**12, "head_dim": DELETE}, "layers_1e18": {"num_hidden_layers": 10**18},
                "sizes_overflow": {"intermediate_size": 2**62, "hidden_size": 2**62, "head_dim": DELETE},
                "positions_1e15": {"max_position_embeddings": 10**15},
                "rope_theta_infinite": {"rope_theta": "__INF__"}, "rope_scaling": {"rope_scaling": {"factor": 8.0}}})


def trainer_state_seeds():
    valid = {"step": 12, "sampler": {"seed": 7, "offset": 96}, "tokens_seen": 1536, "elapsed_seconds": 3.25,
             "hyperparameters": {"lr": 0.001, "batch": 4, "seq": 32}}
    put("trainer_state", "valid_state.json", json.dumps(valid, indent=2))
    put("trainer_state", "valid_minimal.json", '{"step": 0, "sampler": {"seed": 0, "offset": 0}}')
    for name, edit in {"negative_step": {"step": -1}, "step_string": {"step": "12"}, "step_float": {"step": 1.5},
                       "missing_sampler": {"sampler": DELETE}, "sampler_not_object": {"sampler": [7, 96]},
                       "negative_seed": {"sampler": {"seed": -7, "offset": 96}},
                       "seed_too_large": {"sampler": {"seed": 2**64, "offset": 0}},
                       "elapsed_string": {"elapsed_seconds": "3s"}}.items():
        state = dict(valid)
        for key, value in edit.items():
            state.pop(key) if value is DELETE else state.__setitem__(key, value)
        put("trainer_state", f"bad_{name}.json", json.dumps(state))
    put("trainer_state", "bad_empty.json", "")
    put("trainer_state", "bad_invalid_utf8.json", b'{"step": 1, "sampler": {"seed": 0, "offset": 0}, "x": "\xff"}')


def derived_safetensors_seeds(target, valid_name, prefix=b""):
    """Invalid variants of a valid safetensors seed (after `prefix`): a tensor missing, one extra, one
    with the wrong shape, one with the wrong dtype."""
    blob = (CORPUS / target / valid_name).read_bytes()[len(prefix):]
    header, data = parse_safetensors(blob)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors[name] = (info["dtype"], info["shape"], data[begin:end])
    names = sorted(tensors)
    victim = max(names, key=lambda n: len(tensors[n][1]))  # a matrix, so a transposed shape is wrong
    missing = dict(tensors)
    del missing[victim]
    extra = dict(tensors)
    extra["model.unexpected.weight"] = ("F32", [2], struct.pack("<2f", 1, 2))
    reshaped = dict(tensors)
    dtype, shape, raw = tensors[victim]
    reshaped[victim] = (dtype, list(reversed(shape)) if shape[0] != shape[-1] else [math.prod(shape)], raw)
    retyped = dict(tensors)
    retyped[victim] = ("I64" if dtype == "F64" else "F64", [len(raw) // 8], raw) if len(raw) % 8 == 0 else \
        ("I32", shape, raw)
    for name, variant in {"missing_tensor": missing, "extra_tensor": extra, "wrong_shape": reshaped,
                          "wrong_dtype": retyped}.items():
        put(target, f"bad_{name}", prefix + build(variant, header.get("__metadata__")))


def library_seeds():
    if (CORPUS / "optimizer_state" / "valid_adamw.safetensors").exists():
        derived_safetensors_seeds("optimizer_state", "valid_adamw.safetensors")
    model = CORPUS / "model_dir" / "valid_micro"
    if model.exists():
        config_text, _, _ = model.read_bytes().partition(b"\0")
        derived_safetensors_seeds("model_dir", "valid_micro", config_text + b"\0")
        weights = model.read_bytes()[len(config_text) + 1:]
        config = json.loads(config_text)
        # The weights fit this config only: a config that disagrees with them must be refused.
        for name, edit in {"config_vocab_mismatch": {"vocab_size": config["vocab_size"] + 1},
                           "config_extra_layer": {"num_hidden_layers": config["num_hidden_layers"] + 1}}.items():
            put("model_dir", f"bad_{name}", json.dumps({**config, **edit}).encode() + b"\0" + weights)
        put("model_dir", "bad_no_weights", config_text)
        put("model_dir", "bad_truncated_weights", config_text + b"\0" + weights[: len(weights) // 2])


def gpt2_byte_chars():
    """GPT-2's byte -> character table (tokenizer/byte_level.hpp)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table, extra = {}, 256
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(extra)
            extra += 1
    return table


def tokenizer_json_seeds():
    """A small byte-level BPE tokenizer.json (a Split sequence, merges in both notations, an added
    token) and one refused variant per rule the loader enforces."""
    chars = gpt2_byte_chars()
    vocab = {chars[b]: b for b in range(256)}
    vocab.update({"ab": 256, "abc": 257, "\u0120t": 258, "\u0120th": 259})
    split = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False},
        {"type": "Split", "pattern": {"Regex": "\\s+(?!\\S)|\\s+|[\\p{L}\\p{M}]+|\\p{P}+"}, "behavior": "MergedWithNext",
         "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    valid = {"added_tokens": [{"id": 260, "content": "<|end|>", "special": True}], "normalizer": None,
             "pre_tokenizer": split, "post_processor": None, "decoder": {"type": "ByteLevel"},
             "model": {"type": "BPE", "vocab": vocab, "merges": ["a b", ["ab", "c"], "\u0120 t", "\u0120t h"]}}
    put("tokenizer_json", "valid_split_sequence.json", json.dumps(valid))
    put("tokenizer_json", "valid_gpt2_style.json", json.dumps({**valid, "pre_tokenizer": {
        "type": "ByteLevel", "add_prefix_space": True, "use_regex": True}}))

    def variant(name, edit):
        config = json.loads(json.dumps(valid))
        edit(config)
        put("tokenizer_json", f"bad_{name}.json", json.dumps(config))
    variant("merge_unknown_token", lambda c: c["model"]["merges"].append("ab zz"))
    variant("merge_result_unknown", lambda c: c["model"]["merges"].append("b c"))
    variant("regex_rejected", lambda c: c["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex="(\\p{N}"))
    variant("duplicate_ids", lambda c: c["model"]["vocab"].update(zz=97))
    variant("duplicate_added_ids", lambda c: c["added_tokens"].append({"id": 260, "content": "<|x|>"}))
    variant("id_huge", lambda c: c["model"]["vocab"].update(ab=2**40))
    variant("missing_byte", lambda c: c["model"]["vocab"].pop(chars[10]))
    variant("normalizer_nfc", lambda c: c.update(normalizer={"type": "NFC"}))
    variant("byte_level_not_last", lambda c: c["pre_tokenizer"]["pretokenizers"].reverse())
    put("tokenizer_json", "bad_malformed.json", json.dumps(valid)[:300])


def sharded_dir_seeds():
    """An index (before the first NUL) and the one shard it may name, model-00001-of-00001.safetensors
    (after it), with FP8 weights in [2, 2] blocks: the fuzz target's block size."""
    shard = "model-00001-of-00001.safetensors"
    codes = bytes([0x38, 0x40, 0xB8, 0x01, 0x7E, 0x00])  # 1, 2, -1, 2^-9, 448, 0
    good = {"w": ("F8_E4M3", [2, 3], codes), "w_scale_inv": ("F32", [1, 2], struct.pack("<2f", 0.5, 4.0)),
            "norm": ("BF16", [2], struct.pack("<2H", 0x3F80, 0x4000))}

    def seed(name, tensors, weight_map=None, index_text=None, total_size=None):
        if total_size is None:  # the bytes of tensor data, as save_pretrained writes it
            total_size = sum(len(data) for _, _, data in tensors.values())
        index = index_text if index_text is not None else json.dumps(
            {"metadata": {"total_size": total_size}, "weight_map": weight_map or {n: shard for n in tensors}})
        put("sharded_dir", name, index.encode() + b"\0" + build(tensors))

    seed("valid_fp8", good)
    seed("valid_no_fp8", {"norm": good["norm"]})
    seed("bad_missing_scale", {k: v for k, v in good.items() if k != "w_scale_inv"})
    seed("bad_scale_shape", {**good, "w_scale_inv": ("F32", [2, 2], struct.pack("<4f", 1, 1, 1, 1))})
    seed("bad_scale_not_f32", {**good, "w_scale_inv": ("BF16", [1, 2], struct.pack("<2H", 0x3F80, 0x3F80))})
    seed("bad_orphan_scale", {"v_scale_inv": ("F32", [1, 1], struct.pack("<f", 1))})
    seed("bad_unknown_dtype", {"w": ("F8_E4M3FNUZ", [2, 3], codes)})
    seed("bad_fp8_vector", {"w": ("F8_E4M3", [6], codes), "w_scale_inv": ("F32", [1, 1], struct.pack("<f", 1))})
    seed("bad_missing_shard", good, {n: "model-00002-of-00002.safetensors" for n in good})
    seed("bad_escaping_name", good, {n: "../" + shard for n in good})
    seed("bad_listed_absent", good, {**{n: shard for n in good}, "extra": shard})
    seed("bad_unlisted", good, {"norm": shard})
    seed("bad_duplicate_key", good, index_text='{"weight_map": {"norm": "%s", "norm": "%s"}}' % (shard, shard))
    seed("bad_no_weight_map", good, index_text='{"metadata": {"total_size": 1}}')
    seed("other_total_size", good, total_size=1)  # informational: loads, as Hugging Face's loaders do


if __name__ == "__main__":
    shutil.rmtree(CORPUS / "sharded_dir", ignore_errors=True)
    sharded_dir_seeds()
    for target in ("safetensors", "deepseek_v3_config", "llama_config", "trainer_state", "tokenizer_json"):
        shutil.rmtree(CORPUS / target, ignore_errors=True)
    safetensors_seeds()
    config_seeds()
    trainer_state_seeds()
    tokenizer_json_seeds()
    library_seeds()
