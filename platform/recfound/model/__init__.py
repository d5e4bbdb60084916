"""The model: backbone loading, TMoLE layers and router, objectives.

backbone (+ gguf, presets): load a frozen causal LM from a preset, a HF folder or a GGUF file.
adapter: the interface both modes implement; tmole and lora: the two modes; attach: `attach_adapter`.
state: adapter save/load and the dense per-task export. routing: the routing report and heatmap.
objectives, attention: the embedding and generative losses.
"""
