"""The PyTorch side: the prompted encoder is the backbone it wraps, and generators behave."""

import pytest

torch = pytest.importorskip("torch")
from transformers import BertModel  # noqa: E402

from ipt_edge_export.model import IPTConfig, IPTModel, PromptedEncoder  # noqa: E402

pytestmark = pytest.mark.export


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
        actual = PromptedEncoder(bert)(
            embeds, mask, types, embeds[:, :0], torch.zeros(1, layers, 0, hidden), mask[:, :0]
        )
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


@pytest.mark.parametrize("kind", ["lstm", "cnn", "mlp", "lookup", "lstm-deep"])
def test_a_rows_prompts_do_not_depend_on_its_batch_or_padding(bert, kind):
    model = IPTModel(bert, IPTConfig(generator=kind, prompt_length=4, labels=["a", "b"])).eval()
    for parameter in model.generator.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    alone = torch.tensor([[2, 5, 6, 3]])
    batch = torch.tensor([[2, 5, 6, 3, 0, 0, 0, 0], [2, 9, 10, 11, 12, 13, 14, 3]])
    with torch.no_grad():
        by_itself = model.generator(alone, model.word_embeddings(alone), torch.ones_like(alone))
        in_batch = model.generator(batch, model.word_embeddings(batch), (batch != 0).long())
    torch.testing.assert_close(in_batch[0][0], by_itself[0][0], atol=1e-5, rtol=0)
    if by_itself[1] is not None:
        torch.testing.assert_close(in_batch[1][0], by_itself[1][0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["static-deep", "mlp-deep", "cnn-deep"])
def test_deep_kinds_give_a_prompt_to_every_layer(bert, kind):
    model = IPTModel(bert, IPTConfig(generator=kind, prompt_length=4, labels=["a", "b"])).eval()
    ids = torch.tensor([[2, 5, 6, 3], [2, 9, 3, 0]])
    _, layer_prompts = model.generator(ids, model.word_embeddings(ids), (ids != 0).long())
    assert layer_prompts.shape == (2, bert.config.num_hidden_layers, 4, bert.config.hidden_size)


def layer_outputs(model, bert, ids, mask, types) -> list[torch.Tensor]:
    """Each backbone layer's output hidden states [B, P+T, H] in one forward pass of `model`."""
    outputs = []
    hooks = [
        layer.register_forward_hook(lambda module, args, output: outputs.append(output[0].detach().clone()))
        for layer in bert.encoder.layer
    ]
    try:
        with torch.no_grad():
            model(ids, mask, types)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(outputs) == bert.config.num_hidden_layers
    return outputs


def test_deep_prompts_change_the_output_of_inner_layers(bert):
    # Layer l's prompt is added at the input of layer l: changing layer 1's prompt leaves layer 0's
    # output as it was and changes layer 1's, at the text's own positions too (through attention).
    assert bert.config.num_hidden_layers >= 2
    model = IPTModel(bert, IPTConfig(generator="static-deep", prompt_length=4, labels=["a", "b"])).eval()
    ids = torch.tensor([[2, 5, 6, 3]])
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    before = layer_outputs(model, bert, ids, mask, types)
    with torch.no_grad():
        model.generator.deep.layer_base[1].normal_(std=1.0)  # only layer 1's prompt
    after = layer_outputs(model, bert, ids, mask, types)
    p = 4
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)  # below layer 1: untouched
    for layer in range(1, bert.config.num_hidden_layers):
        text_change = (after[layer][:, p:] - before[layer][:, p:]).abs().max()
        assert text_change > 1e-3, f"layer {layer}'s output at the text positions did not change"


def test_cnn_takes_inputs_shorter_than_its_widest_filter(bert):
    model = IPTModel(bert, IPTConfig(generator="cnn", prompt_length=4, labels=["a", "b"])).eval()
    ids = torch.tensor([[2, 3]])
    prompts, _ = model.generator(ids, model.word_embeddings(ids), torch.ones_like(ids))
    assert prompts.shape == (1, 4, bert.config.hidden_size)


def test_deep_instance_prompts_reach_every_layer_after_one_step(bert):
    # A deep kind starts as the shallow model (its instance part is zero), but one training step must
    # already give every layer an instance part: a zero scale times a zero delta would learn neither.
    model = IPTModel(bert, IPTConfig(generator="mlp-deep", prompt_length=4, labels=["a", "b"]))
    ids = torch.tensor([[2, 5, 6, 3], [2, 9, 3, 0]])
    mask, types = (ids != 0).long(), torch.zeros_like(ids)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(model(ids, mask, types), torch.tensor([0, 1])).backward()
    optimizer.step()
    model.eval()
    _, layer_prompts = model.generator(ids, model.word_embeddings(ids), mask)
    instance_part = layer_prompts - model.generator.deep.layer_base  # [B, L, P, H]
    rows_differ = (instance_part[0] - instance_part[1]).abs().amax(dim=(1, 2))  # [L]
    assert (rows_differ > 0).all()  # per input, in every layer (a shared bias alone would not differ)
