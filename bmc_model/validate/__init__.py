"""Running configurations side by side and comparing them with the model's predictions.

plain (validate), speculative (validate --sd), hf_generate (validate --hf); the probe that re-times
drifting terms inside a run; interleaving and lockstep; memory checks and probes; workloads and
prompts; report rendering (report.py, the only module that prints).
"""
