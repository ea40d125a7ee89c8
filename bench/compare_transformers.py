#!/usr/bin/env python3
"""Side-by-side with Hugging Face transformers (run on the GPU device, where torch and
transformers are installed): the same model shape with random weights in bf16 + SDPA, prefill
(evaluation) tokens/s and decode tokens/s at the same batch and context as `kvx bench`, printed
next to kvx's numbers from `kvx bench decode|prefill|eval --format json`.

  kvx bench decode --format json > decode.json    # and prefill.json, eval.json likewise
  python3 bench/compare_transformers.py --model-shape llama3-8b --batch 8 --context 32768 \
      --kvx-decode decode.json --kvx-prefill prefill.json --kvx-eval eval.json
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
    ap.add_argument("--batch", type=int, default=8, help="decode batch (as kvx bench decode)")
    ap.add_argument("--context", type=int, default=32768, help="decode context (as kvx bench decode)")
    ap.add_argument("--prefill-tokens", type=int, default=4096, help="tokens of the prefill and eval measurements "
                    "(batch 1, as kvx bench prefill|eval)")
    ap.add_argument("--chunk", type=int, default=32, help="tokens per forward call of the eval measurement")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--kvx-decode", help="JSON of `kvx bench decode --format json`")
    ap.add_argument("--kvx-prefill", help="JSON of `kvx bench prefill --format json`")
    ap.add_argument("--kvx-eval", help="JSON of `kvx bench eval --format json`")
    ap.add_argument("--no-decode", action="store_true", help="skip the decode measurement")
    ap.add_argument("--json", help="also write transformers' numbers here")
    a = ap.parse_args()

    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.cache_utils import DynamicCache

    cfg = LlamaConfig(**SHAPES[a.model_shape], max_position_embeddings=max(a.context + 16, 8192),
                      attn_implementation="sdpa", torch_dtype=torch.bfloat16)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()

    def last_logits(ids, **kw):
        try:
            return model(ids, logits_to_keep=1, **kw)
        except TypeError:  # transformers < 4.50
            return model(ids, num_logits_to_keep=1, **kw)

    res = {"transformers": transformers.__version__, "torch": torch.__version__, "shape": a.model_shape}
    with torch.inference_mode():
        ids = torch.randint(0, cfg.vocab_size, (1, a.prefill_tokens + 1), device="cuda")
        x, y = ids[:, :-1], ids[:, 1:]
        res["prefill_tok_s"] = a.prefill_tokens / timed(lambda: last_logits(x, use_cache=False), a.iters)

        # evaluation as kvx's perplexity protocol feeds it: chunks through a cache, NLL per chunk
        def eval_chunked():
            cache, nll = DynamicCache(), torch.zeros((), device="cuda", dtype=torch.float64)
            for c0 in range(0, a.prefill_tokens, a.chunk):
                out = model(x[:, c0:c0 + a.chunk], past_key_values=cache, use_cache=True)
                lp = torch.log_softmax(out.logits.float(), -1)
                nll -= lp.gather(2, y[:, c0:c0 + a.chunk, None]).double().sum()
            return nll.item()

        # and as a plain transformers perplexity script does: one forward over the window, all logits
        def eval_whole():
            lp = torch.log_softmax(model(x, use_cache=False).logits.float(), -1)
            return -lp.gather(2, y[..., None]).double().sum().item()

        res["eval_chunked_tok_s"] = a.prefill_tokens / timed(eval_chunked, a.iters)
        res["eval_whole_tok_s"] = a.prefill_tokens / timed(eval_whole, a.iters)

        if not a.no_decode:
            res["decode_tok_s"] = decode_tok_s(model, cfg, a, last_logits)

    print(f"transformers {res['transformers']} (torch {res['torch']}), {a.model_shape}, bf16, SDPA, random weights")
    print(f"  prefill {a.prefill_tokens} tokens: {res['prefill_tok_s']:.0f} tok/s")
    print(f"  eval {a.prefill_tokens} tokens in chunks of {a.chunk}: {res['eval_chunked_tok_s']:.0f} tok/s; "
          f"one forward: {res['eval_whole_tok_s']:.0f} tok/s")
    if "decode_tok_s" in res:
        print(f"  decode batch {a.batch}, context {a.context}: {res['decode_tok_s']:.1f} tok/s")
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)

    def side_by_side(path, key, hf, what, eager_step_key=None):
        """kvx's tok/s against transformers'; with eager_step_key also kvx's eagerly launched step
        (both launch eagerly)."""
        if not path:
            return
        kvx = json.load(open(path))
        print(f"\n{what}: kvx vs transformers ({hf:.1f} tok/s)")
        eager_head = f"{'kvx eager':>12}{'x transformers':>16}" if eager_step_key else ""
        print(f"{'method':<22}{'kvx tok/s':>12}{'x transformers':>16}{eager_head}")
        for row in kvx["rows"]:
            if key in row:
                line = f"{row.get('label', row['method']):<22}{row[key]:>12.1f}{row[key] / hf:>16.2f}"
                if eager_step_key and eager_step_key in row:
                    eager = kvx["batch"] / row[eager_step_key] * 1e6
                    line += f"{eager:>12.1f}{eager / hf:>16.2f}"
                print(line)

    side_by_side(a.kvx_prefill, "tokens_per_s", res["prefill_tok_s"], f"prefill ({a.prefill_tokens} tokens)")
    side_by_side(a.kvx_eval, "tokens_per_s", res["eval_chunked_tok_s"], f"eval (chunks of {a.chunk})")
    if "decode_tok_s" in res:
        side_by_side(a.kvx_decode, "decode_tok_s", res["decode_tok_s"], f"decode (batch {a.batch}, context {a.context})",
                     "decode_step_eager_us")


def decode_tok_s(model, cfg, a, last_logits):
    """Decode tokens/s at the full context, from a DynamicCache of `context` random tokens."""
    import torch
    from transformers.cache_utils import DynamicCache
    with torch.inference_mode():
        nkv, hd = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
        cache = DynamicCache()
        for layer in range(cfg.num_hidden_layers):
            k = torch.randn(a.batch, nkv, a.context, hd, device="cuda", dtype=torch.bfloat16)
            cache.update(k, torch.randn_like(k), layer)
        step = torch.randint(0, cfg.vocab_size, (a.batch, 1), device="cuda")
        pos = torch.full((a.batch, 1), a.context, device="cuda")

        def trim():  # every timed step decodes at the same context
            if hasattr(cache, "layers"):
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, :a.context], layer.values[:, :, :a.context]
            else:
                for i in range(len(cache.key_cache)):
                    cache.key_cache[i] = cache.key_cache[i][:, :, :a.context]
                    cache.value_cache[i] = cache.value_cache[i][:, :, :a.context]

        def decode_one():
            last_logits(step, past_key_values=cache, position_ids=pos, use_cache=True)
            trim()

        return a.batch / timed(decode_one, a.iters)


if __name__ == "__main__":
    main()
