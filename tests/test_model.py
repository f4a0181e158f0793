"""The PyTorch side: the prompted encoder is the backbone it wraps, and generators behave."""

import pytest
import torch
from ipt_edge_export.model import IPTConfig, IPTModel, PromptedEncoder
from transformers import BertModel


@pytest.fixture(scope="module")
def bert(tiny_backbone):
    return BertModel.from_pretrained(tiny_backbone, attn_implementation="eager").eval()


def test_prompted_encoder_without_prompts_equals_the_hugging_face_model(bert):
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    types = torch.zeros_like(ids)
    layers, hidden = bert.config.num_hidden_layers, bert.config.hidden_size
    with torch.no_grad():
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        embeds = bert.embeddings.word_embeddings(ids)
        actual = PromptedEncoder(bert)(embeds, mask, types, embeds[:, :0], torch.zeros(1, layers, 0, hidden))
    torch.testing.assert_close(actual[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=0)


def test_only_generator_and_head_are_trainable(bert):
    model = IPTModel(bert, IPTConfig(generator="mlp", prompt_length=4, labels=["a", "b"]))
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"generator", "head"}
    assert model.tuned_parameter_count() == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", ["lookup", "mlp"])
def test_instance_wise_generators_give_different_inputs_different_prompts(bert, kind):
    model = IPTModel(bert, IPTConfig(generator=kind, prompt_length=4, labels=["a", "b"])).eval()
    for parameter in model.generator.parameters():  # leave the zero-initialised start
        torch.nn.init.normal_(parameter, std=0.1)
    ids = torch.tensor([[2, 5, 6, 3], [2, 9, 10, 3]])
    mask = torch.ones_like(ids)
    prompts, _ = model.generator(ids, model.word_embeddings(ids), mask)
    assert prompts.shape == (2, 4, bert.config.hidden_size)
    assert not torch.allclose(prompts[0], prompts[1])


def test_static_prompt_is_the_same_for_every_input(bert):
    model = IPTModel(bert, IPTConfig(generator="static", prompt_length=4, labels=["a", "b"])).eval()
    ids = torch.tensor([[2, 5, 6, 3], [2, 9, 10, 3]])
    prompts, layer_prompts = model.generator(ids, model.word_embeddings(ids), torch.ones_like(ids))
    torch.testing.assert_close(prompts[0], prompts[1])
    assert layer_prompts is None


def test_lookup_handles_inputs_shorter_than_the_prompt(bert):
    model = IPTModel(bert, IPTConfig(generator="lookup", prompt_length=8, labels=["a", "b"])).eval()
    ids = torch.tensor([[2, 5, 3]])
    prompts, _ = model.generator(ids, model.word_embeddings(ids), torch.ones_like(ids))
    assert prompts.shape == (1, 8, bert.config.hidden_size)


def test_unknown_generator_is_refused():
    with pytest.raises(ValueError, match=r"generator must be one of"):
        IPTConfig(generator="transformer", labels=["a", "b"])
