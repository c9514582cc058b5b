"""``python -m fusedopt.bench``: fusedopt's backends side by side with every installed peer.

Speed claims are ratios measured in one run on one machine: every contender of a case (the
fusedopt backends, the torch.optim / torch.compile / DeepSpeed / apex / Transformer Engine peers
and a copy/read roofline) steps the same tensors, and their timed repeats are interleaved
round-robin so that the noise of a shared machine hits all of them alike.

One module per job:

* :mod:`.modes` — the step modes (plain, clip, clip+AMP, bf16 params, telemetry)
* :mod:`.workloads` — parameter lists: GPT-2 small, Llama-style scaled to memory, a size sweep
* :mod:`.bytes_model` — bytes each step must move per parameter, per algorithm and mode
* :mod:`.case` — the tensors one case steps (shared by its contenders)
* :mod:`.contenders` — what a contender is; the fusedopt backends as contenders
* :mod:`.peers` — torch.optim, torch.compile, DeepSpeed, apex, Transformer Engine
* :mod:`.roofline` — same-run copy and read bandwidth
* :mod:`.harness` — warm-up, interleaved timed repeats, p20/p50/p80
* :mod:`.suite` — the plans (short, full) and the loop over cases
* :mod:`.metadata` — machine, versions, load
* :mod:`.report` — progress, terminal table, CSV, Markdown
* :mod:`.plot` — the PNG
* :mod:`.cli` — the command line
"""
