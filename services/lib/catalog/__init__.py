"""The model-square catalog (模型广场): the model templates every service reads — what each model can
be tuned, compressed and deployed with. Data (``catalog_data/*.yaml``), loaded by ``templates``."""
