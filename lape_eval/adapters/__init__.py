"""Per-language adapters: the language-neuron subnetwork (a delta on the MLP rows/columns of a set's
neurons), LoRA and the baselines; training, checkpoints, the delta format and merging.
"""
