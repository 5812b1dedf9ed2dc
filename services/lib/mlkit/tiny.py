"""A tiny random-init causal LM in Hugging Face format, for fast tests.

Why: the platform's pipelines (weight checks, tuning, compression, deployment) need a real HF folder
to run against, and a real model is hundreds of MB. This one is ~200k parameters (< 1 MB), is
built in well under a second with no network, and loads with the Auto classes like any checkpoint.
Its outputs are meaningless, but shapes, tokenizer, chat template and config are all realistic.
"""
from __future__ import annotations

from pathlib import Path

# Small bilingual corpus for training the tokenizer. Inline so the build needs no files or network.
_CORPUS = """\
The quick brown fox jumps over the lazy dog.
A model is a function that maps inputs to outputs, and training adjusts its parameters.
Large language models predict the next token given all the previous tokens.
Fine-tuning adapts a pretrained model to a specific task with a small amount of data.
Quantization stores weights with fewer bits so that inference uses less memory and runs faster.
The service exposes an API that is compatible with the OpenAI chat completions protocol.
Please summarize the following paragraph in one sentence.
What is the capital of France? The capital of France is Paris.
How many days are there in a week? There are seven days in a week.
Write a short poem about the sea, the wind and the stars.
Translate the sentence into Chinese, then explain the grammar.
The weather today is sunny with a light breeze from the west.
She opened the window, looked at the garden and smiled at the flowers.
Numbers such as 1, 2, 3, 10, 42, 100 and 2024 appear in many documents.
def add(a, b):
    return a + b
for i in range(10):
    print(i * i)
{"role": "user", "content": "Hello!"}
Deployment creates an inference service with one or more instances behind a load balancer.
Object storage keeps the weights, the datasets and the logs of every job.
A learning rate that is too high makes the loss diverge; one that is too low makes training slow.
The tokenizer splits text into pieces, and the embedding layer turns each piece into a vector.
Attention lets every position look at every earlier position in the sequence.
Evaluation compares the answers of the model with reference answers written by people.
Thank you very much for your help, have a nice day!
I would like to book a table for two people at seven o'clock tonight.
Can you recommend a good book about history, science or travel?
今天天气很好，我们一起去公园散步吧。
大模型即服务平台提供模型训练、压缩、部署和调用的一站式能力。
请用一句话总结下面这段文字的主要内容。
中国的首都是北京，法国的首都是巴黎。
一个星期有七天，一年有十二个月。
模型微调可以让预训练模型更好地适应具体的业务场景。
量化可以减少模型占用的显存，并提升推理速度。
部署服务后，可以通过接口调用模型进行对话。
学习率过大会导致损失发散，学习率过小会导致训练缓慢。
我想预订今晚七点两个人的座位。
谢谢你的帮助，祝你有美好的一天！
请写一首关于大海、风和星星的短诗。
数据集需要上传到对象存储，然后才能用于训练任务。
权重校验会检查配置文件、词表文件和权重文件是否正确。
人工智能正在改变我们工作和生活的方式。
春天来了，花开了，小鸟在树上唱歌。
他每天早上六点起床，先跑步，然后吃早饭。
这本书讲述了一个关于勇气和友谊的故事。
Autumn leaves fall slowly while children walk to school along the river.
My grandmother bakes bread every Sunday morning and shares it with the neighbours.
The museum opens at nine and closes at five, except on public holidays.
Engineers measure latency, throughput and memory before they choose a configuration.
If the checkpoint is corrupted, the loader raises an error and the job fails.
Every request carries a token that identifies the user and the project.
The mountain village was quiet, covered in snow, lit only by small yellow lamps.
Music, painting and literature help people express feelings that words alone cannot.
Doctors recommend drinking water, sleeping well and exercising regularly.
The train to Shanghai leaves from platform three at half past eight.
秋天的树叶慢慢落下，孩子们沿着小河走去上学。
我的奶奶每个星期天早上都会烤面包，并分给邻居们吃。
博物馆上午九点开门，下午五点关门，节假日除外。
工程师在选择配置之前，会先测量延迟、吞吐量和内存占用。
如果检查点文件损坏，加载器会报错，任务也会失败。
每个请求都带有一个令牌，用来识别用户和项目。
山里的村庄很安静，被白雪覆盖，只有几盏黄色的小灯亮着。
音乐、绘画和文学帮助人们表达语言无法表达的感情。
医生建议多喝水、睡好觉、经常锻炼身体。
去上海的火车八点半从三号站台出发。
在线推理服务支持流式输出，也支持批量处理请求。
用户可以在控制台查看任务记录、运行日志和资源使用情况。
这个城市有很多历史悠久的建筑，吸引了世界各地的游客。
长江是中国最长的河流，黄河被称为中华民族的母亲河。
他把自行车停在图书馆门口，然后进去借了三本小说。
考试之前，同学们在教室里认真复习数学、物理和化学。
厨房里飘来饭菜的香味，妈妈正在做红烧肉和西红柿炒鸡蛋。
"""

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, the same template Qwen2 ships (default system prompt omitted to keep prompts short).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_DIMS = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, vocab_size=2048, max_position_embeddings=2048)


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        # Full byte alphabet so any input (emoji, rare CJK) still encodes without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_CORPUS.splitlines(keepends=True), trainer=trainer)
    return tok


def _config(arch: str, *, eos_id: int, bos_id: int):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(_DIMS, bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
                  tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=10000.0)
    if arch == "qwen2":
        return Qwen2Config(**common, use_sliding_window=False)
    if arch == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"unsupported arch {arch!r}; expected 'qwen2' or 'llama'")


def build_tiny_model(folder: Path, *, arch: str = "qwen2", seed: int = 0) -> Path:
    """Write a tiny random-init ``arch`` model + tokenizer to ``folder`` and return it.

    Deterministic for a given ``seed`` (same bytes for the weights).
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    backend = _train_tokenizer(_DIMS["vocab_size"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>",
        # No BOS: like Qwen2, prompts start directly with <|im_start|>.
        bos_token=None, unk_token=None, additional_special_tokens=["<|endoftext|>", "<|im_start|>"],
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=_DIMS["max_position_embeddings"], chat_template=CHATML_TEMPLATE,
    )
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    config = _config(arch, eos_id=eos_id, bos_id=bos_id)
    # Seeded CPU generator -> identical init for the same seed, independent of prior RNG use.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id, do_sample=False,
        max_new_tokens=32,
    )
    model.save_pretrained(folder, safe_serialization=True)
    # Template inside tokenizer_config.json (not chat_template.jinja): every loader reads it there.
    tokenizer.save_pretrained(folder, save_jinja_files=False)
    return folder
