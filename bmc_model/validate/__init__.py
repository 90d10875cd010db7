"""Running configurations side by side and comparing them with the model's predictions.

plain (validate), speculative (validate --sd, its workloads in sd_workloads), hf_generate (validate --hf),
each returning a typed result (plain_result, sd_result, hf_result: to_dict() is the JSON the commands print);
the probe that re-times drifting terms inside a run; interleaving and lockstep; memory checks and probes;
workloads and prompts; report.py, the one module that renders results for people.
"""
