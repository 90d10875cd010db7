"""The model core: specs, policy, profile, the cost model split by concept, the sweep and the decision.

Torch-free (schedulers import predict() per request). Every equation is derived in docs/model.md.

Symbols (as in the docs):
  L layers, b batch, e bytes per element, rho = b*kv_heads*head_dim*e bytes of one K (or V) row
  P prompt rows, N final length, T = N - P generated tokens
  gamma draft tokens per iteration, q = gamma + 1 rows verified per iteration,
  E expected rows accepted per iteration (1 without speculative decoding), I = T / E iterations
  C_k capacity after the k-th growth event, n_k valid rows when it happens, K events in all
"""
