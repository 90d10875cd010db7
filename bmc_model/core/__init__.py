"""The model core: specs, policy, profile, the cost model split by concept, the sweep and the decision.

Torch-free (schedulers import predict() per request). Every equation is derived in docs/model.md.

Symbols (as in the docs; the code spells each one way and uses it for nothing else):
  L layers, b batch, e bytes per element, rho = b*kv_heads*head_dim*e bytes of one K (or V) row
  group = heads / kv_heads query rows a KV head attends with per token row (GQA folded; 1 in transformers)
  P prompt rows, N final length, T = N - P generated tokens
  gamma draft tokens per iteration, q = gamma + 1 rows verified per iteration,
  A rows one iteration keeps (1..q), a_i acceptance of draft position i,
  E expected rows accepted per iteration (1 without speculative decoding), I = T / E iterations
  r rows a fixed growth adds, m = max(r, q) rows past the valid ones after it, factor geometric growth's multiplier
  C_k capacity after the k-th growth event (C_0 after the prefill: c_init), n_k valid rows when it happens,
  K events in all, Delta rows between events
  gap rows a growth leaves beyond the next q (m - q; the first event's: C_0 - q - P, gap1): the next event
  comes at the first iteration start more than gap rows past the last
  x the size a term is read at (bytes one call touches) or a curve (its rows); y rows past a start or a gap
  rows token rows of a matmul, or query rows of attention
  <term>_c0, <term>_slope the (c0, slope) segment of a profile term (alloc, copy, attn) at the size reached
  lambda (lazy_backing) the share of never-written allocated bytes the OS does not hold resident
"""
