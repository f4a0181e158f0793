"""The PyTorch side: every generator family emits per-layer keys/values that behave, and only the
generator and head train."""

import pytest

torch = pytest.importorskip("torch")
from transformers import BertModel  # noqa: E402

from ipt_edge_export.model import REMOVED_GENERATORS, IPTConfig, IPTModel  # noqa: E402

from .tiny import INSTANCE_KINDS, KINDS  # noqa: E402

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def bert(tiny_backbone):
    return BertModel.from_pretrained(tiny_backbone, attn_implementation="eager").eval()


def make(bert, kind, p=4, **options):
    return IPTModel(bert, IPTConfig(generator=kind, prompt_length=p, labels=["a", "b"], **options)).eval()


def leave_the_start(model):
    """Random weights everywhere but the static prefix: each family's instance part switched on."""
    with torch.no_grad():
        for name, parameter in model.generator.named_parameters():
            if name != "base":
                torch.nn.init.normal_(parameter, std=0.1)


def train_steps(model, ids, steps=3):
    mask, types = (ids != 0).long(), torch.zeros_like(ids)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(ids, mask, types), torch.tensor([0, 1])).backward()
        optimizer.step()
    model.eval()


IDS = torch.tensor([[2, 5, 6, 3], [2, 9, 10, 3]])
PADDED = torch.tensor([[2, 5, 6, 3, 0, 0, 0, 0], [2, 9, 10, 11, 12, 13, 14, 3]])


def prefix_of(model, ids):
    """The generator's prefix_kv, as keys and values [B, L, heads, P, head_dim] to compare by row."""
    with torch.no_grad():
        prefix_kv = model.generator(ids, model.word_embeddings(ids), (ids != 0).long())
    return torch.stack([kv[0] for kv in prefix_kv], dim=1), torch.stack([kv[1] for kv in prefix_kv], dim=1)


def test_only_generator_and_head_are_trainable(bert):
    model = make(bert, "mlp-prefix")
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"generator", "head"}
    assert model.tuned_parameter_count() == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("kind", KINDS)
def test_every_family_gives_every_layer_keys_and_values(bert, kind):
    config = bert.config
    heads = config.num_attention_heads
    model = make(bert, kind, p=3)
    with torch.no_grad():
        prefix_kv = model.generator(PADDED, model.word_embeddings(PADDED), (PADDED != 0).long())
    assert len(prefix_kv) == config.num_hidden_layers
    for layer in prefix_kv:  # graphs.prefix_kv: [2 (keys, values), B, heads, P, head_dim]
        assert layer.shape == (2, 2, heads, 3, config.hidden_size // heads)


@pytest.mark.parametrize("kind", INSTANCE_KINDS)
def test_instance_families_start_at_the_static_prefix(bert, kind):
    model = make(bert, kind)
    static = make(bert, "prefix")  # the same seed: the same static start
    keys, values = prefix_of(model, PADDED)
    static_keys, static_values = prefix_of(static, PADDED)
    torch.testing.assert_close(keys, static_keys, atol=0, rtol=0)
    torch.testing.assert_close(values, static_values, atol=0, rtol=0)


@pytest.mark.parametrize("kind", INSTANCE_KINDS)
def test_instance_families_give_different_inputs_different_prefixes_once_trained(bert, kind):
    model = IPTModel(bert, IPTConfig(generator=kind, prompt_length=4, labels=["a", "b"], dropout=0.0))
    train_steps(model, IDS)
    keys, values = prefix_of(model, IDS)
    assert (keys[0] - keys[1]).abs().max() > 1e-4
    assert (values[0] - values[1]).abs().max() > 1e-4


def test_the_static_prefix_is_the_same_for_every_input(bert):
    model = make(bert, "prefix")
    train_steps(model, IDS)
    keys, values = prefix_of(model, IDS)
    torch.testing.assert_close(keys[0], keys[1], atol=0, rtol=0)
    torch.testing.assert_close(values[0], values[1], atol=0, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_rows_prefix_does_not_depend_on_its_batch_or_padding(bert, kind):
    model = make(bert, kind)
    leave_the_start(model)
    alone = prefix_of(model, PADDED[:1, :4])
    in_batch = prefix_of(model, PADDED)
    for by_itself, batched in zip(alone, in_batch, strict=True):
        torch.testing.assert_close(batched[0], by_itself[0], atol=1e-5, rtol=0)


def test_lookup_handles_inputs_shorter_than_the_prompt(bert):
    # P = 8, texts of 3 and 5 tokens: slots past a text's end get no instance part (the static
    # prefix), in a batch or alone.
    model = make(bert, "lookup-prefix", p=8)
    leave_the_start(model)
    base = make(bert, "prefix", p=8)
    short = torch.tensor([[2, 5, 3, 0, 0], [2, 9, 10, 11, 3]])
    keys, _ = prefix_of(model, short)
    static_keys, _ = prefix_of(base, short)
    assert keys.shape[3] == 8
    torch.testing.assert_close(keys[0, :, :, 3:], static_keys[0, :, :, 3:], atol=0, rtol=0)
    torch.testing.assert_close(keys[1, :, :, 5:], static_keys[1, :, :, 5:], atol=0, rtol=0)
    assert (keys[0, :, :, 1:3] - static_keys[0, :, :, 1:3]).abs().max() > 1e-4  # the text's own slots
    torch.testing.assert_close(prefix_of(model, short[:1, :3])[0][0], keys[0], atol=1e-6, rtol=0)


def test_lookup_reads_the_token_at_each_slot(bert):
    model = make(bert, "lookup-prefix")
    leave_the_start(model)
    keys, _ = prefix_of(model, torch.tensor([[2, 5, 6, 3], [2, 5, 9, 3]]))
    torch.testing.assert_close(keys[0, :, :, :2], keys[1, :, :, :2], atol=0, rtol=0)  # same ids
    assert (keys[0, :, :, 2] - keys[1, :, :, 2]).abs().max() > 1e-4  # slot 2: 6 against 9


def test_cnn_takes_inputs_shorter_than_its_widest_filter(bert):
    model = make(bert, "cnn-prefix")
    leave_the_start(model)
    keys, _ = prefix_of(model, torch.tensor([[2, 3]]))
    assert keys.shape[0] == 1 and torch.isfinite(keys).all()


def test_unknown_generator_is_refused():
    with pytest.raises(ValueError, match=r"generator must be one of prefix, lookup-prefix, .*attn-prefix"):
        IPTConfig(generator="transformer", labels=["a", "b"])


@pytest.mark.parametrize("removed", sorted(REMOVED_GENERATORS))
def test_a_removed_prepend_generator_is_refused_naming_its_replacement(removed):
    replacement = REMOVED_GENERATORS[removed]
    assert replacement in KINDS
    with pytest.raises(
        ValueError,
        match=rf"generator '{removed}' prepended prompts, .*retrain with --generator {replacement}$",
    ):
        IPTConfig(generator=removed, labels=["a", "b"])


def layer_outputs(model, bert, ids, mask, types) -> list[torch.Tensor]:
    """Each backbone layer's output hidden states [B, T, H] in one forward pass of `model`."""
    outputs = []
    hooks = [
        layer.output.register_forward_hook(
            lambda module, args, output: outputs.append(output.detach().clone())
        )
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


def test_a_layers_prefix_changes_that_layer_and_the_ones_after_only(bert):
    # Layer l's prefix is read by layer l's attention: changing layer 1's leaves layer 0's output as
    # it was, and changes layer 1's at the text's own positions.
    assert bert.config.num_hidden_layers >= 2
    model = make(bert, "prefix")
    ids = torch.tensor([[2, 5, 6, 3]])
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    before = layer_outputs(model, bert, ids, mask, types)
    with torch.no_grad():
        model.generator.base[1].normal_(std=1.0)  # only layer 1's keys and values
    after = layer_outputs(model, bert, ids, mask, types)
    torch.testing.assert_close(after[0], before[0], atol=0, rtol=0)  # below layer 1: untouched
    for layer in range(1, bert.config.num_hidden_layers):
        assert (after[layer] - before[layer]).abs().max() > 1e-3, f"layer {layer}'s output did not change"


@pytest.mark.parametrize("kind", ["mlp-prefix", "lookup-prefix"])
def test_the_instance_part_reaches_every_layer_after_one_step(bert, kind):
    # The instance part starts at zero (`up`), but one training step must already give every layer
    # one of its own per input: a zero gate times a zero `up` would learn neither.
    model = IPTModel(bert, IPTConfig(generator=kind, prompt_length=4, labels=["a", "b"], dropout=0.0))
    train_steps(model, IDS, steps=1)
    keys, _ = prefix_of(model, IDS)
    rows_differ = (keys[0] - keys[1]).abs().amax(dim=(1, 2, 3))  # [L]
    assert (rows_differ > 0).all()
