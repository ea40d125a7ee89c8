#!/usr/bin/env python3
"""Side-by-side with Hugging Face transformers (run on the GPU device, where torch and
transformers are installed): the same model shape with random weights in bf16 + SDPA, prefill
(evaluation) tokens/s and decode tokens/s at the same batch and context as `kvx bench`, printed
next to kvx's numbers from `kvx bench decode --format json` (pass its output file with --kvx).

  python3 bench/compare_transformers.py --model-shape llama3-8b --batch 8 --context 32768 \
      --kvx kvx_bench.json
"""
import argparse
import json
import time

SHAPES = {
    "llama3-8b": dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096,
                      intermediate_size=14336, vocab_size=128256, rope_theta=500000.0),
    "llama2-7b": dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, hidden_size=4096,
                      intermediate_size=11008, vocab_size=32000),
    "mistral-7b": dict(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096,
                       intermediate_size=14336, vocab_size=32000),
}


def timed(fn, iters):
    import torch
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--prefill-tokens", type=int, default=4096, help="tokens per sequence in the prefill measurement")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--kvx", help="JSON written by `kvx bench decode --format json`")
    a = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.cache_utils import DynamicCache

    cfg = LlamaConfig(**SHAPES[a.model_shape], max_position_embeddings=max(a.context + 16, 8192),
                      attn_implementation="sdpa", torch_dtype=torch.bfloat16)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()

    res = {}
    with torch.inference_mode():
        ids = torch.randint(0, cfg.vocab_size, (1, a.prefill_tokens), device="cuda")
        t = timed(lambda: model(ids, use_cache=False, logits_to_keep=1), a.iters)
        res["prefill_tok_s"] = a.prefill_tokens / t
        # decode at the full context: build a cache of `context` tokens per sequence directly
        nkv, hd = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
        cache = DynamicCache()
        for layer in range(cfg.num_hidden_layers):
            k = torch.randn(a.batch, nkv, a.context, hd, device="cuda", dtype=torch.bfloat16)
            cache.update(k, torch.randn_like(k), layer)
        step = torch.randint(0, cfg.vocab_size, (a.batch, 1), device="cuda")
        pos = torch.full((a.batch, 1), a.context, device="cuda")

        def decode_one():
            model(step, past_key_values=cache, position_ids=pos, use_cache=True)
            for layer in cache.layers if hasattr(cache, "layers") else []:
                layer.keys, layer.values = layer.keys[:, :, :a.context], layer.values[:, :, :a.context]

        t = timed(decode_one, a.iters)
        res["decode_tok_s"] = a.batch / t

    print(f"transformers {a.model_shape} bf16 SDPA: prefill {res['prefill_tok_s']:.0f} tok/s "
          f"({a.prefill_tokens} tokens), decode {res['decode_tok_s']:.1f} tok/s (batch {a.batch}, context {a.context})")
    if a.kvx:
        kvx = json.load(open(a.kvx))
        print(f"{'method':<14}{'kvx decode tok/s':>18}{'x transformers':>16}")
        for row in kvx["rows"]:
            if "decode_tok_s" in row:
                print(f"{row['method']:<14}{row['decode_tok_s']:>18.1f}{row['decode_tok_s'] / res['decode_tok_s']:>16.2f}")


if __name__ == "__main__":
    main()
