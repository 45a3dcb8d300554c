"""Which verify rows DeepConf's per-token confidences come from under MEDUSA (pure part)."""

import torch

from sglang_pr.deepconf.speculative import accepted_rows

torch.set_num_threads(1)


def test_accepted_rows_follow_the_accepted_nodes():
    # bs 2, n 4 tree nodes, V 3: row (b, i) is filled with 10 * b + i to be recognisable.
    logits = (10 * torch.arange(2).view(2, 1, 1) + torch.arange(4).view(1, 4, 1)).float()
    logits = logits.expand(2, 4, 3).clone()
    accept_nodes = torch.tensor([[0, 2, -1], [0, 1, 3]])  # -1 pads a shorter accepted path
    rows = accepted_rows(logits, accept_nodes)
    assert rows.shape == (2, 3, 3)
    # emitted token j of request b was produced by the verify row of its j-th accepted node
    assert rows[0, :2, 0].tolist() == [0.0, 2.0]
    assert rows[1, :, 0].tolist() == [10.0, 11.0, 13.0]
