"""Inference: the engine (onnxruntime, continuous batching) and the per-instance OpenAI-compatible server.

- ``engine.Engine``: a model folder -> ONNX (``model_files.plan_model``, exported on first load) ->
  a decode loop (``kv_gqa.GqaBackend`` on CPU, ``kv_concat.ConcatBackend`` on CANN/CUDA and for
  quantized optimum-layout models) driven by one scheduler thread that batches all live sequences.
- ``params.SamplingParams``: every parameter of the guide's table 11-1 with its range and default.
- ``server``: ``python -m services.lib.inference.server --model-dir DIR --port P ...`` (FastAPI).
- ``chat`` / ``tool_calls``: chat templates, tools in the prompt, <tool_call> parsing.
- ``grammar``: constrained decoding (xgrammar): response_format JSON and tool calls always parse.
"""
