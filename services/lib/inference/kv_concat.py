"""Decode loop for optimum-layout ONNX graphs (standard ops; runs on every execution provider).

These graphs take ``past_key_values.{i}.key|value`` of shape (batch, kv_heads, past, head_dim) and
return ``present.*`` one position longer, so the cache is carried from one step to the next. The
quantized models of the compression jobs have this layout too.

Batching: the sequences that decode together share one left-padded cache (rows right-aligned, the
attention mask zeroes the padding, position ids are per row). Between steps it stays where the
provider put it (device memory on an accelerator, via IO binding); only when the set of sequences
changes (one joins after its prefill, one finishes) is it rebuilt through host memory.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from services.lib.mlkit.onnx_export import ONNX_FILE, load_onnx_session

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
# OrtValue device names for the providers that keep tensors in their own memory.
DEVICE_OF_PROVIDER = {"CUDAExecutionProvider": "cuda", "CANNExecutionProvider": "cann"}


class ConcatBackend:
    name = "concat-kv"

    def __init__(self, folder: Path, *, max_slots: int, max_len: int,
                 providers: list[str] | None = None, threads: int | None = None,
                 spinning: bool | None = False):
        self.session = load_onnx_session(Path(folder) / ONNX_FILE, providers=providers, threads=threads,
                                         spinning=spinning)
        self.providers = self.session.get_providers()
        self.device = DEVICE_OF_PROVIDER.get(self.providers[0], "cpu")
        inputs = {i.name: i for i in self.session.get_inputs()}
        layers = sorted({int(m.group(1)) for n in inputs if (m := _PAST.match(n))})
        if not layers:
            raise ValueError(f"{folder}/{ONNX_FILE} has no past_key_values inputs: export it with a KV cache")
        self.num_layers = len(layers)
        first = inputs["past_key_values.0.key"]
        self.kv_heads, self.head_dim = int(first.shape[1]), int(first.shape[3])
        self._kv_dtype = _NP_TYPES[first.type]
        self._has_positions = "position_ids" in inputs
        self._past_names = [f"past_key_values.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]
        self._present_names = [n.replace("past_key_values", "present") for n in self._past_names]
        logits = next(o for o in self.session.get_outputs() if o.name == "logits")
        self.vocab_size = int(logits.shape[-1]) if isinstance(logits.shape[-1], int) else None
        self.max_slots, self.max_len = max_slots, max_len
        self.lengths: dict[int, int] = {}
        self._alone: dict[int, list[np.ndarray]] = {}     # slot -> per-layer (kv, len, hd) host arrays
        self._batch: list[int | None] = []                 # slot of each row; None = row is stale
        self._batch_past: list = []                         # OrtValues (device) of the batched cache
        self._width = 0                                     # padded length of the batched cache

    # -- helpers --------------------------------------------------------------------------------

    def _ortvalue(self, array: np.ndarray):
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def _run(self, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray, past: list, every: bool = False):
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", ids)
        io.bind_cpu_input("attention_mask", mask)
        if self._has_positions:
            io.bind_cpu_input("position_ids", positions)
        for name, value in zip(self._past_names, past):
            io.bind_ortvalue_input(name, value)
        io.bind_output("logits", "cpu")
        for name in self._present_names:
            io.bind_output(name, self.device)
        self.session.run_with_iobinding(io)
        outs = io.get_outputs()
        logits = outs[0].numpy()
        if every:
            return logits.astype(np.float32, copy=False), outs[1:]
        return logits[:, -1, :].astype(np.float32, copy=False), outs[1:]

    def _host_kv(self, slot: int, batch_host: list[np.ndarray] | None) -> list[np.ndarray]:
        if slot in self._alone:
            return self._alone[slot]
        row = self._batch.index(slot)
        pad = self._width - self.lengths[slot]
        return [layer[row, :, pad:, :] for layer in batch_host]

    def _batch_host(self) -> list[np.ndarray] | None:
        return [v.numpy() for v in self._batch_past] if self._batch else None

    def _detach(self, slot: int) -> None:
        """``slot`` gets new content outside the batch: its batch row becomes stale."""
        if slot in self._batch:
            self._batch[self._batch.index(slot)] = None

    def _rebuild(self, slots: list[int]) -> None:
        host = self._batch_host()
        # Sequences in the old batch that do not decode now keep their cache on the side.
        for slot in self._batch:
            if slot is not None and slot not in slots and slot in self.lengths:
                self._alone[slot] = [a.copy() for a in self._host_kv(slot, host)]
        kvs = {slot: self._host_kv(slot, host) for slot in slots}
        width = max(self.lengths[s] for s in slots)
        past = []
        for index in range(2 * self.num_layers):
            arr = np.zeros((len(slots), self.kv_heads, width, self.head_dim), dtype=self._kv_dtype)
            for row, slot in enumerate(slots):
                n = self.lengths[slot]
                if n:
                    arr[row, :, width - n:, :] = kvs[slot][index]
            past.append(self._ortvalue(arr))
        for slot in slots:
            self._alone.pop(slot, None)
        self._batch, self._batch_past, self._width = list(slots), past, width

    # -- backend API ----------------------------------------------------------------------------

    # These graphs return the logits of every position they are given.
    all_logits = True

    def prefill(self, slot: int, token_ids: np.ndarray, on_logits=None, *,
                cached: np.ndarray | None = None) -> np.ndarray:
        """Run the prompt into ``slot``; logits of the last position (``on_logits(0, rows)``: of all).

        ``cached``: keys and values of the prompt's first positions (2 x layers, kv_heads, p, head_dim),
        from the prefix cache: only the rest runs, with them as the past."""
        ids = np.asarray(token_ids, dtype=np.int64)[None, :]
        n = ids.shape[1]
        if n > self.max_len:
            raise ValueError(f"prompt of {n} tokens exceeds the maximum length {self.max_len}")
        p = 0 if cached is None else int(cached.shape[2])
        if p and on_logits is not None:
            raise ValueError("a prefill from a cached prefix has no logits for the cached positions")
        if p:
            past = [self._ortvalue(cached[i][None].astype(self._kv_dtype, copy=False)) for i in range(len(cached))]
        else:
            empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=self._kv_dtype)
            past = [self._ortvalue(empty)] * (2 * self.num_layers)
        logits, present = self._run(ids[:, p:], np.ones((1, n), dtype=np.int64),
                                    np.arange(p, n, dtype=np.int64)[None, :], past, every=on_logits is not None)
        if on_logits is not None:
            on_logits(0, logits[0])
            logits = logits[:, -1, :]
        self._detach(slot)
        self._alone[slot] = [v.numpy()[0] for v in present]
        self.lengths[slot] = n
        return logits[0]

    def kv(self, slot: int, start: int, end: int) -> np.ndarray:
        """A copy of the keys and values of positions [start, end) of ``slot``:
        (2 x layers, kv_heads, end - start, head_dim)."""
        host = self._batch_host() if slot not in self._alone else None
        return np.stack([a[:, start:end] for a in self._host_kv(slot, host)])

    def decode(self, slots: list[int], tokens: list[int]) -> np.ndarray:
        if self._batch != list(slots):
            self._rebuild(list(slots))
        lengths = np.array([self.lengths[s] for s in slots], dtype=np.int64)
        if int(lengths.max()) + 1 > self.max_len:
            raise ValueError(f"sequence would exceed the maximum length {self.max_len}")
        width = self._width + 1
        mask = (np.arange(width)[None, :] >= (self._width - lengths)[:, None]).astype(np.int64)
        logits, present = self._run(np.asarray(tokens, dtype=np.int64)[:, None], mask,
                                    lengths[:, None].copy(), self._batch_past)
        self._batch_past, self._width = present, width
        for s in slots:
            self.lengths[s] += 1
        return logits

    def copy(self, src: int, dst: int) -> None:
        host = self._batch_host() if src not in self._alone else None
        kv = [a.copy() for a in self._host_kv(src, host)]
        self._detach(dst)
        self._alone[dst] = kv
        self.lengths[dst] = self.lengths[src]

    def release(self, slot: int) -> None:
        self._detach(slot)
        self._alone.pop(slot, None)
        self.lengths.pop(slot, None)

    def length(self, slot: int) -> int:
        return self.lengths.get(slot, 0)
