"""What the parity tests share: a left-padded batch of random ids, transformers' (torch, CPU) logits
for it at the positions our decoders use (cumsum(mask) - 1), and greedy decoding compared with theirs."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from sepo_jax.model.sampler import generate


def left_padded_batch(vocab, rng, length=11):
    """ids [3, length] with rows 1 and 2 left-padded by 3 and 6 tokens, and their mask."""
    ids = rng.integers(4, vocab, size=(3, length))
    mask = np.ones_like(ids, bool)
    mask[1, :3] = False
    mask[2, :6] = False
    ids[~mask] = 0
    return ids, mask


def torch_logits(model, ids, mask):
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                     position_ids=torch.tensor(positions)).logits.float().numpy()


def assert_greedy_matches(model, theirs_model, ids, mask, steps):
    """Our greedy `generate` gives transformers' greedy `generate` tokens for `steps` new tokens."""
    gen = nnx.jit(generate, static_argnames=("max_new_tokens", "temperature"))(
        model, jnp.asarray(ids), jnp.asarray(mask), jax.random.key(0), max_new_tokens=steps, temperature=0.0)
    with torch.no_grad():
        hf = theirs_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask.astype(np.int64)),
                                   max_new_tokens=steps, do_sample=False, pad_token_id=0)
    np.testing.assert_array_equal(np.asarray(gen.tokens), hf[:, ids.shape[1]:].numpy())
