"""ML helpers shared by several services (model loading, tokenizer fixes, test models)."""
import threading

# transformers' from_pretrained is not thread-safe either: while it builds a model on the meta
# device it patches torch.nn globally, so a load in another thread at the same time ends up with
# meta tensors ("Cannot copy out of meta tensor"). Every model load in a process that may run
# several at once (weight checks, LoRA merges, compression in one `maas up` process) holds this.
MODEL_LOADING = threading.RLock()


def preload_transformers() -> None:
    """Import transformers' model classes in the calling thread.

    transformers resolves its names lazily and that is not thread-safe: two worker threads importing
    it at once can see a half-initialised module (ImportError on AutoModelForCausalLM). Services that
    run model code in threads call this once at start-up.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: F401
