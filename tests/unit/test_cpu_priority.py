"""The engine's compute threads run at a lower CPU priority than the threads that relay tokens.

Per-thread niceness is Linux's, the platform's target (elsewhere cpu_priority does nothing)."""
import os
import threading

import numpy as np
import pytest

from services.lib.inference import cpu_priority


def niceness(tid: int | None = None) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid or threading.get_native_id())


def tasks() -> set[int]:
    return {int(t) for t in os.listdir("/proc/self/task")}


def on_thread(fn):
    out = {}
    thread = threading.Thread(target=lambda: out.update(value=fn()))
    thread.start()
    thread.join()
    return out["value"]


def test_lowering_a_thread_leaves_the_others_alone():
    base = niceness()

    def lowered():
        cpu_priority.lower_this_thread(3)
        return niceness()

    assert on_thread(lowered) == min(19, base + 3)
    assert niceness() == base
    assert on_thread(lambda: (cpu_priority.lower_this_thread(0), niceness())[1]) == base


def test_threads_started_while_building_inherit_the_lower_priority():
    base = niceness()
    seen = {}
    release = threading.Event()

    def build():
        child = threading.Thread(target=lambda: (seen.update(child=niceness()), release.wait()))
        child.start()
        return child, niceness()

    child, builder = cpu_priority.on_lowered_thread(build, by=4)
    release.set()
    child.join()
    assert builder == seen["child"] == min(19, base + 4)
    assert niceness() == base


def test_the_build_error_reaches_the_caller():
    def build():
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        cpu_priority.on_lowered_thread(build, by=2)


def test_onnxruntime_pool_threads_inherit_it(tmp_path):
    """What the engine relies on: onnxruntime starts its intra-op threads when a session is built."""
    import onnx
    from onnx import TensorProto, helper

    from services.lib.mlkit.onnx_export import load_onnx_session

    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [64, 64]) for n in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [64, 64])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    base, before = niceness(), tasks()
    session = cpu_priority.on_lowered_thread(lambda: load_onnx_session(path, threads=2, spinning=False), by=5)
    started = tasks() - before
    assert started, "onnxruntime started no pool thread while the session was built"
    assert {niceness(t) for t in started} == {min(19, base + 5)}
    a = np.ones((64, 64), np.float32)
    assert session.run(None, {"a": a, "b": a})[0][0, 0] == 64.0
