"""Sampling parameter rules of table 11-1 (ranges, defaults, contradictory combinations)."""
import pytest

from services.lib.inference.params import InvalidParameter, SamplingParams


def test_defaults_follow_the_guide():
    p = SamplingParams()
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.n) == (16, 1.0, 1.0, -1, 1)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty, p.length_penalty) == (0, 0, 1, 1)
    assert p.stop == () and p.ignore_eos is False and p.use_beam_search is False and p.width == 1


def test_a_single_stop_string_becomes_a_tuple():
    assert SamplingParams(stop="\n").stop == ("\n",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")


@pytest.mark.parametrize("kwargs, param", [
    (dict(max_tokens=0), "max_tokens"),
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=2.5), "temperature"),
    (dict(top_p=0), "top_p"),
    (dict(top_p=1.01), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=-2), "top_k"),
    (dict(presence_penalty=2.1), "presence_penalty"),
    (dict(frequency_penalty=-2.1), "frequency_penalty"),
    (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(repetition_penalty=2.5), "repetition_penalty"),
    (dict(stop=["ok", ""]), "stop"),
    (dict(n=0), "n"),
    (dict(n=3, best_of=2, temperature=1), "best_of"),
    # n > 1 must really sample (guide: temperature > 0 and top_k > 1)
    (dict(n=2, temperature=0), "temperature"),
    (dict(n=2, top_k=1), "top_k"),
    # beam search needs n > 1, temperature 0, top_p 1, top_k -1
    (dict(use_beam_search=True, n=1, temperature=0), "n"),
    (dict(use_beam_search=True, n=2, temperature=0.7), "temperature"),
    (dict(use_beam_search=True, n=2, temperature=0, top_p=0.9), "top_p"),
    (dict(use_beam_search=True, n=2, temperature=0, top_k=5), "top_k"),
    # length_penalty only with beam search
    (dict(length_penalty=0.5), "length_penalty"),
])
def test_out_of_range_or_contradictory_values_name_the_parameter(kwargs, param):
    with pytest.raises(InvalidParameter) as err:
        SamplingParams(**kwargs)
    assert err.value.param == param
    assert param in str(err.value)
    assert isinstance(err.value, ValueError)


def test_valid_combinations():
    assert SamplingParams(n=3, temperature=0.8, seed=1).width == 3
    assert SamplingParams(n=2, best_of=5, temperature=1).width == 5
    beam = SamplingParams(use_beam_search=True, n=2, best_of=4, temperature=0, length_penalty=0.6)
    assert beam.width == 4 and beam.greedy
    assert SamplingParams(temperature=0).greedy and SamplingParams(top_k=1).greedy
    assert not SamplingParams().penalised and SamplingParams(presence_penalty=0.5).penalised
