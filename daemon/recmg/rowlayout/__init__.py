"""Row layouts: per table, a permutation of its rows that puts the rows predicted to be
reused (the hot band, best first) on the first pages and every other row after them
in its old order.  ``format`` reads and writes ``.rlayout`` files (a card and the hot
bands); ``permute`` turns a layout into positions and moves rows in place.  The client
applies a layout (recmg.client, recmg.client.torch_hooks); ``recmg layout`` makes one
(recmg.training.rowlayout); ``recmg sim --layout`` evaluates one.  Only numpy here:
the client links it."""
