"""What the parity tests share: a left-padded batch of random ids and transformers' (torch, CPU) logits
for it at the positions our decoders use (cumsum(mask) - 1)."""

import numpy as np
import torch


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
