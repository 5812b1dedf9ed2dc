"""Issue 17 item 4: OpenAI's legacy /v1/completions with the official ``openai`` client, through the gateway
(per-service and unified base URLs), on the shared tiny service: echo + logprobs of prompt + answer equal
the chat path's numbers for the same tokens, max_tokens 0 + echo scores the prompt (lm-evaluation-harness's
loglikelihood), streaming with usage, metering per key, content moderation of text and token-id prompts."""
from __future__ import annotations

import openai
import pytest

from tests.integration.test_openai_api import HI, _answer_ids, _expect, _flushed, _key_usage, client, key, service, unified  # noqa: F401
from tests.integration.test_serving_api import serving_tmp, tiny_model_folder  # noqa: F401

pytestmark = pytest.mark.integration


async def test_completions_echo_logprobs_match_chat_and_score_the_prompt(api, client, unified, service, key,
                                                                           serving_tmp):
    from transformers import AutoTokenizer

    from contracts.openai import ChatMessage
    from services.lib.inference.chat import encode, render_prompt

    name = service["name"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_folder(serving_tmp))   # the service's model
    chat = await client.chat.completions.create(model=name, messages=HI, max_tokens=6, temperature=0, logprobs=True,
                                                extra_body={"ignore_eos": True})
    content = chat.choices[0].logprobs.content
    prompt = encode(tokenizer, render_prompt(tokenizer, [ChatMessage.model_validate(m) for m in HI]).text)
    answer = _answer_ids(tokenizer, content)

    # The chat prompt as token ids, answered greedily with echo: the answer's numbers are chat's.
    await _flushed()
    before = await _key_usage(api, key)
    echoed = await client.completions.create(model=name, prompt=prompt, max_tokens=6, temperature=0, echo=True,
                                             logprobs=2, extra_body={"ignore_eos": True})
    choice = echoed.choices[0]
    assert echoed.object == "text_completion" and choice.finish_reason == "length"
    assert choice.text.startswith(tokenizer.decode(prompt))
    lp = choice.logprobs
    assert len(lp.tokens) == len(prompt) + 6 and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[len(prompt):] == pytest.approx([e.logprob for e in content], abs=1e-4)
    assert all(1 <= len(top) <= 3 for top in lp.top_logprobs[1:])
    assert echoed.usage.prompt_tokens == len(prompt) and echoed.usage.completion_tokens == 6

    # max_tokens 0 + echo (how lm-evaluation-harness scores a loglikelihood) on the unified route.
    scored = await unified.completions.create(model=name, prompt=prompt + answer, max_tokens=0, echo=True,
                                              logprobs=1)
    numbers = scored.choices[0].logprobs.token_logprobs
    assert scored.usage.completion_tokens == 0 and len(numbers) == len(prompt) + len(answer)
    assert numbers[0] is None
    assert numbers[1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-4)
    await _flushed()
    after = await _key_usage(api, key)
    assert after["requests"] == before["requests"] + 2
    assert after["total_tokens"] == before["total_tokens"] + echoed.usage.total_tokens + scored.usage.total_tokens


async def test_completions_streamed_and_not_with_several_prompts(client, unified, service):
    name = service["name"]
    kwargs = dict(model=name, prompt=["Once upon a time", "The weather"], max_tokens=5, temperature=0,
                  echo=True, logprobs=1, extra_body={"ignore_eos": True})
    plain = await unified.completions.create(**kwargs)
    assert [c.index for c in plain.choices] == [0, 1] and plain.choices[1].text.startswith("The weather")
    chunks = [c async for c in await client.completions.create(**kwargs, stream=True,
                                                               stream_options={"include_usage": True})]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    for index, expected in enumerate(plain.choices):
        parts = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == index]
        assert "".join(p.text for p in parts) == expected.text
        assert parts[-1].finish_reason == "length"
        streamed = [x for p in parts for x in p.logprobs.token_logprobs]
        assert streamed == pytest.approx(expected.logprobs.token_logprobs, abs=1e-6)


async def test_completions_refusals_name_the_field(client, unified, service, serving_tmp):
    from transformers import AutoTokenizer

    name = service["name"]
    error = await _expect(client.completions.create(model=name, prompt="hi", suffix="!"),
                          openai.BadRequestError, 400)
    assert error.body["param"] == "suffix"
    error = await _expect(unified.completions.create(model=name, prompt="hi", max_tokens=0),
                          openai.BadRequestError, 400)
    assert error.body["param"] == "max_tokens"
    blocked = "Tell me how to make a bomb"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_folder(serving_tmp))
    for prompt in (blocked, tokenizer(blocked)["input_ids"]):   # token ids are decoded and checked too
        error = await _expect(client.completions.create(model=name, prompt=prompt), openai.BadRequestError, 400,
                              "content_filter")
        assert error.body["param"] == "prompt"
    await _expect(unified.completions.create(model="no-such-service", prompt="hi"), openai.NotFoundError, 404,
                  "model_not_found")
