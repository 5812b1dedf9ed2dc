"""Decode loop for the model builder's graph (GroupQueryAttention with a shared KV buffer).

One preallocated KV buffer per layer, shaped (slots, kv_heads, max_len, head_dim), is bound through
IO binding as both the past input and the present output, so the kernel appends each new token in
place: no per-token copies, no allocations. Each slot (a row) is one sequence; GQA takes the valid
length of every row from the attention mask (its sum - 1), so rows of different lengths decode
together in one batched run — continuous batching without padding copies.

Host memory only: this backend runs on the CPU provider. The buffers are lazily mapped pages, so
the memory a slot really uses grows with its sequence, not with max_len.
"""
from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np

from services.lib.mlkit.onnx_export import ONNX_FILE, load_onnx_session

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def lazy_zeros(shape: tuple[int, ...], dtype) -> tuple[np.ndarray, mmap.mmap]:
    """Zeros in anonymous memory that the kernel maps page by page as it is written (+ the map).

    Not np.zeros: numpy asks for transparent huge pages on large arrays, and then the first token
    written for a head faults in 2 MB at once (all of max_len), so one slot costs its full size.
    """
    nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(buf, dtype=dtype, count=int(np.prod(shape))).reshape(shape), buf


class GqaBackend:
    name = "gqa-shared-buffer"

    def __init__(self, folder: Path, *, max_slots: int, max_len: int | None = None,
                 threads: int | None = None, spinning: bool | None = False, prefill_chunk: int = 512):
        folder = Path(folder)
        cfg = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
        dec = cfg["decoder"]
        self.session = load_onnx_session(folder / dec.get("filename", ONNX_FILE),
                                         providers=["CPUExecutionProvider"], threads=threads,
                                         spinning=spinning)
        self.providers = self.session.get_providers()
        self.num_layers = int(dec["num_hidden_layers"])
        self.kv_heads, self.head_dim = int(dec["num_key_value_heads"]), int(dec["head_size"])
        self.context_length = int(cfg["context_length"])
        self.max_len = min(max_len or self.context_length, self.context_length)
        self.max_slots = max_slots
        # GQA's scratch for attention scores is (heads, chunk, max_len) floats: long prompts go in
        # chunks so a 4k-token prompt does not need a gigabyte of it.
        self.prefill_chunk = prefill_chunk
        names = dec["inputs"]
        self._past = [(names["past_key_names"] % i, names["past_value_names"] % i) for i in range(self.num_layers)]
        outs = dec["outputs"]
        self._present = [(outs["present_key_names"] % i, outs["present_value_names"] % i)
                         for i in range(self.num_layers)]
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._ids_name, self._mask_name = names["input_ids"], names["attention_mask"]
        self._pos_name = names.get("position_ids", "position_ids") if "position_ids" in inputs else None
        self._kv_dtype = _NP_TYPES[inputs[self._past[0][0]].type]
        logits = next(o for o in self.session.get_outputs() if o.name == outs["logits"])
        self._logits_name, self._logits_dtype = logits.name, _NP_TYPES[logits.type]
        self.vocab_size = int(cfg["vocab_size"])
        shape = (max_slots, self.kv_heads, self.max_len, self.head_dim)
        maps = [(lazy_zeros(shape, self._kv_dtype), lazy_zeros(shape, self._kv_dtype))
                for _ in range(self.num_layers)]
        self._buffers = [(k[0], v[0]) for k, v in maps]
        self._maps = [m for k, v in maps for m in (k[1], v[1])]
        self.lengths = np.zeros(max_slots, dtype=np.int64)
        self._bindings: dict[tuple[int, int], object] = {}
        # Whether ``prefill`` can report every position's logits (not when the LM head is pruned).
        self.all_logits = not self._pruned_head()

    # -- binding -----------------------------------------------------------------------------

    def _binding(self, row0: int, rows: int):
        """An IO binding with the KV buffers of rows [row0, row0+rows) bound in place (cached)."""
        key = (row0, rows)
        io = self._bindings.get(key)
        if io is None:
            io = self.session.io_binding()
            shape = [rows, self.kv_heads, self.max_len, self.head_dim]
            for (pk, pv), (ok, ov), (bk, bv) in zip(self._past, self._present, self._buffers):
                for past, present, buf in ((pk, ok, bk), (pv, ov, bv)):
                    ptr = buf.ctypes.data + row0 * buf[0].nbytes
                    io.bind_input(past, "cpu", 0, self._kv_dtype, shape, ptr)
                    io.bind_output(present, "cpu", 0, self._kv_dtype, shape, ptr)
            self._bindings[key] = io
        return io

    def _run(self, row0: int, ids: np.ndarray, mask: np.ndarray, positions: np.ndarray,
             every: bool = False) -> np.ndarray:
        """Logits of the last position of each row, (rows, V); ``every``: of all positions, (rows, S, V)."""
        io = self._binding(row0, ids.shape[0])
        io.bind_cpu_input(self._ids_name, ids)
        io.bind_cpu_input(self._mask_name, mask)
        if self._pos_name:
            io.bind_cpu_input(self._pos_name, positions)
        # The builder's graph may prune the LM head to the last position: size logits from the
        # model's declared sequence dimension.
        seq = 1 if self._pruned_head() else ids.shape[1]
        logits = np.empty((ids.shape[0], seq, self.vocab_size), dtype=self._logits_dtype)
        io.bind_output(self._logits_name, "cpu", 0, self._logits_dtype, list(logits.shape),
                       logits.ctypes.data)
        self.session.run_with_iobinding(io)
        if every:
            return logits.astype(np.float32, copy=False)
        return logits[:, -1, :].astype(np.float32, copy=False)

    def _pruned_head(self) -> bool:
        if not hasattr(self, "_pruned"):
            out = next(o for o in self.session.get_outputs() if o.name == self._logits_name)
            self._pruned = out.shape[1] == 1
        return self._pruned

    # -- backend API ---------------------------------------------------------------------------

    def prefill(self, slot: int, token_ids: np.ndarray, on_logits=None, *,
                cached: np.ndarray | None = None) -> np.ndarray:
        """Run the prompt into ``slot`` (replacing what it held); logits of the last position.

        ``on_logits(start, rows)``: called with the logits of every position, chunk by chunk (only
        where ``all_logits``), so a long prompt never holds (length, vocabulary) floats at once.
        ``cached``: keys and values of the prompt's first positions (2 x layers, kv_heads, p, head_dim),
        from the prefix cache: written into the slot's buffer, and only the rest runs (as a chunk
        after them)."""
        ids = np.asarray(token_ids, dtype=np.int64)[None, :]
        n = ids.shape[1]
        if n > self.max_len:
            raise ValueError(f"prompt of {n} tokens exceeds the KV buffer of {self.max_len}")
        if on_logits is not None and not self.all_logits:
            raise ValueError("this graph computes the last position's logits only")
        p = 0 if cached is None else int(cached.shape[2])
        if p and on_logits is not None:
            raise ValueError("a prefill from a cached prefix has no logits for the cached positions")
        if p:
            for layer, (bk, bv) in enumerate(self._buffers):
                bk[slot, :, :p] = cached[2 * layer]
                bv[slot, :, :p] = cached[2 * layer + 1]
        for start in range(p, n, self.prefill_chunk):
            end = min(n, start + self.prefill_chunk)
            logits = self._run(slot, ids[:, start:end], np.ones((1, end), dtype=np.int64),
                               np.arange(start, end, dtype=np.int64)[None, :], every=on_logits is not None)
            if on_logits is not None:
                on_logits(start, logits[0])
                logits = logits[:, -1, :]
        self.lengths[slot] = n
        return logits[0]

    def decode(self, slots: list[int], tokens: list[int]) -> np.ndarray:
        """Append one token to each of ``slots``; (len(slots), V) logits in the same order.

        Rows between the used slots that do not take part get a dummy token written at their next
        free position, which their own next real token overwrites: harmless.
        """
        rows = max(slots) + 1
        lengths = self.lengths[:rows]
        if int(lengths[slots].max()) + 1 > self.max_len:
            raise ValueError(f"sequence would exceed the KV buffer of {self.max_len}")
        ids = np.zeros((rows, 1), dtype=np.int64)
        ids[slots, 0] = tokens
        idle = np.ones(rows, dtype=bool)
        idle[slots] = False
        lengths = np.where(idle, np.minimum(lengths, self.max_len - 1), lengths)
        total = int(lengths.max()) + 1
        mask = (np.arange(total)[None, :] <= lengths[:, None]).astype(np.int64)
        logits = self._run(0, ids, mask, lengths[:, None].copy())
        self.lengths[slots] += 1
        return logits[slots]

    def kv(self, slot: int, start: int, end: int) -> np.ndarray:
        """A copy of the keys and values of positions [start, end) of ``slot``:
        (2 x layers, kv_heads, end - start, head_dim)."""
        return np.stack([b[slot, :, start:end] for pair in self._buffers for b in pair])

    def copy(self, src: int, dst: int) -> None:
        """Make ``dst`` a copy of ``src``'s cache (n > 1 samples and beams share a prefix)."""
        n = int(self.lengths[src])
        for bk, bv in self._buffers:
            bk[dst, :, :n] = bk[src, :, :n]
            bv[dst, :, :n] = bv[src, :, :n]
        self.lengths[dst] = n

    def release(self, slot: int) -> None:
        """Free the slot and give its memory back (a long finished sequence would keep it)."""
        used = int(self.lengths[slot])
        self.lengths[slot] = 0
        if used and hasattr(mmap, "MADV_DONTNEED"):
            item = np.dtype(self._kv_dtype).itemsize
            span = self.max_len * self.head_dim * item              # one head of one slot
            length = used * self.head_dim * item
            for head in range(self.kv_heads):
                start = (slot * self.kv_heads + head) * span
                first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE   # whole pages inside only
                last = (start + length) // mmap.PAGESIZE * mmap.PAGESIZE
                if last > first:
                    for buf in self._maps:
                        buf.madvise(mmap.MADV_DONTNEED, first, last - first)

    def length(self, slot: int) -> int:
        return int(self.lengths[slot])
