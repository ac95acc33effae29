import torch

from vzero.tiny.pretrain import _spread


def test_spread_copies_each_cell_over_its_block_and_earlier_cells_claim_first():
    index = _spread(4, 5, cells=[6, 8], radius=1).view(4, 5)
    assert index[0, 0] == 6 and index[2, 2] == 6  # cell 6 is (1, 1); it claims (1..2, 0..2) first
    assert index[0, 3] == 8 and index[2, 4] == 8  # cell 8 is (1, 3); it keeps what 6 did not take
    assert index[3, 0] == 15  # out of reach: the token itself
    assert torch.equal(_spread(4, 5, [6, 8], radius=0), torch.arange(20))
