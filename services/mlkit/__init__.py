"""ML helpers shared by several services (model loading, tokenizer fixes, test models)."""


def preload_transformers() -> None:
    """Import transformers' model classes in the calling thread.

    transformers resolves its names lazily and that is not thread-safe: two worker threads importing
    it at once can see a half-initialised module (ImportError on AutoModelForCausalLM). Services that
    run model code in threads call this once at start-up.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: F401
