"""A plain-Python model of the barrier protocol of the Gluon forward's walk over pairs of query blocks
(kernels/block_sparse_attention/gluon_hopper_kernel.py: _producer with _walk_merged_lists, _consumer with
_walk_pair_tiles), written in session 14, when no GPU was lent, to look for hangs and races before the kernel
first runs. It is a model, not the kernel: keep it in step by hand, or delete it once the GPU tests cover it.

One producer and two consumers run as generators that yield the mbarrier waits they block on; mbarriers
complete a phase when their arrivals and transaction bytes are in (a fresh one counts phase 1 as completed,
as on the GPU), TMA completions land at random times, and a random scheduler interleaves everything. Per
trial: random key lists for pairs of query blocks (empty rows, an odd block count), text tiles, ring depths,
with and without turns between the consumers (the kernel takes none). Checked: no deadlock; the producer never
refills a stage a consumer still holds; a consumer reads only the tile it expects, with its code; the output
staging in the last stage waits until both consumers are done with it (k_read); each consumer computes exactly
its own block's list, then the text tiles.

    python benchmarks/results/kernels-h100/session14-pairs/protocol_model.py    # prints "ok <steps>"

Checked that the checks can fail: with the flush of a pending P V removed (the `pending_tile + stages` rule)
it hangs; with the k_read wait removed, or the last stage released with the pending one, an assertion
fails."""

import random

CODE_A, CODE_B, CODE_LAST = 1, 2, 4  # as in the kernel


class MBarrier:
    """An mbarrier: a phase completes when `count` arrivals and every expected transaction are in."""

    def __init__(self, count):
        self.count, self.pending, self.tx, self.phases = count, count, 0, 0

    def arrive(self, expect_tx=0):
        self.pending -= 1
        self.tx += expect_tx
        assert self.pending >= 0, "more arrivals than the barrier's count"
        self._maybe_complete()

    def complete_tx(self):
        self.tx -= 1
        self._maybe_complete()

    def _maybe_complete(self):
        if self.pending == 0 and self.tx == 0:
            self.phases += 1
            self.pending = self.count

    def passed(self, parity):
        """mbarrier.wait(parity) returns: the phase of that parity has completed (a fresh one: parity 1)."""
        return self.phases % 2 != parity


def merged_tiles(list_a, list_b, text_tiles):
    """_walk_merged_lists: (key block, code) per tile; text tiles get negative ids."""
    tiles = []
    i = j = 0
    while i < len(list_a) or j < len(list_b):
        block = min(list_a[i] if i < len(list_a) else 1 << 30, list_b[j] if j < len(list_b) else 1 << 30)
        in_a = i < len(list_a) and list_a[i] == block
        in_b = j < len(list_b) and list_b[j] == block
        i, j = i + in_a, j + in_b
        ends = i == len(list_a) and j == len(list_b) and text_tiles == 0
        tiles.append((block, CODE_A * in_a + CODE_B * in_b + CODE_LAST * ends))
    for x in range(text_tiles):
        tiles.append((-1 - x, CODE_A + CODE_B + CODE_LAST * (x == text_tiles - 1)))
    return tiles


def run(pairs, text_tiles, stages, n_q_blocks, seed, turns):
    """One random interleaving of one program's producer and two consumers over the work items `pairs`."""
    rng = random.Random(seed)
    ready = [MBarrier(1) for _ in range(stages)]
    empty = [MBarrier(2) for _ in range(stages)]
    turn = [MBarrier(1), MBarrier(1)]
    q_ready, q_empty, k_read = MBarrier(1), MBarrier(2), MBarrier(2)
    claim = [None]
    codes = [None] * stages  # (key block, code, tile number) beside each stage
    content = [None] * stages  # ("loading" | "ready", tile number)
    holders = [set() for _ in range(stages)]  # consumers that have not released the stage's current tile
    tma_in_flight = []
    computed = {}  # query block -> key blocks its consumer computed
    done_with_last = set()  # (item, consumer) past every read of the item's last stage

    def producer():
        tile = done = 0
        for item, (list_a, list_b) in enumerate(pairs):
            yield q_empty, (done & 1) ^ 1
            claim[0] = (item, len(list_a) + len(list_b) + text_tiles)
            q_ready.arrive(expect_tx=1)
            tma_in_flight.append((q_ready, None, None))
            for block, code in merged_tiles(list_a, list_b, text_tiles):
                stage = tile % stages
                yield empty[stage], ((tile // stages) & 1) ^ 1
                assert not holders[stage], f"stage {stage} refilled while {holders[stage]} hold it"
                codes[stage] = (block, code, tile)
                content[stage] = ("loading", tile)
                ready[stage].arrive(expect_tx=1)
                tma_in_flight.append((ready[stage], stage, tile))
                tile += 1
            done += 1
        yield q_empty, (done & 1) ^ 1
        claim[0] = (len(pairs), 0)
        q_ready.arrive()

    def release(stage, consumer):
        holders[stage].discard(consumer)
        empty[stage].arrive()

    def consumer(me):
        tile = done = items_with_tiles = 0
        yield q_ready, 0
        item, count = claim[0]
        while item < len(pairs):
            q_block = 2 * item + me
            rows_exist = q_block < n_q_blocks
            mine = []
            stage = 0
            if count > 0:  # _walk_pair_tiles
                pending = pending_tile = pending_stage = 0
                at_end = False
                while not at_end:
                    if pending and tile == pending_tile + stages:  # the flush
                        assert me in holders[pending_stage] and content[pending_stage] == ("ready", pending_tile)
                        release(pending_stage, me)
                        pending = 0
                    stage = tile % stages
                    yield ready[stage], (tile // stages) & 1
                    if turns:
                        yield turn[me], (tile & 1) ^ (1 - me)
                    block, code, loaded = codes[stage]
                    assert loaded == tile and content[stage] == ("ready", tile), (me, tile, codes[stage])
                    at_end = bool(code & CODE_LAST)
                    if (code >> me) & 1 and rows_exist:
                        pv_stage = pending_stage if pending else stage
                        assert me in holders[stage] and me in holders[pv_stage]
                        assert content[pv_stage] == ("ready", pending_tile if pending else tile)
                        if turns:
                            turn[1 - me].arrive()
                        if at_end:
                            q_empty.arrive()
                        mine.append(block)
                        if pending:
                            release(pending_stage, me)
                        pending, pending_tile, pending_stage = 1, tile, stage
                    else:
                        if turns:
                            turn[1 - me].arrive()
                        if at_end:
                            q_empty.arrive()
                        else:
                            release(stage, me)
                    tile += 1
                    yield None  # a point where the others may run
                if pending:  # the last P V
                    assert me in holders[pending_stage] and content[pending_stage] == ("ready", pending_tile)
                    if pending_stage != stage:
                        release(pending_stage, me)
                done_with_last.add((item, me))
                k_read.arrive()
                items_with_tiles += 1
            else:
                q_empty.arrive()
            if rows_exist and count > 0:  # the output staged in the last stage, stored by TMA
                yield k_read, (items_with_tiles - 1) & 1
                assert (item, 1 - me) in done_with_last, f"item {item}: staged while the other still reads"
                assert me in holders[stage] and content[stage][0] == "ready"
                yield None
            if count > 0:
                release(stage, me)
            if rows_exist:
                computed[q_block] = mine
            done += 1
            yield q_ready, done & 1
            item, count = claim[0]

    agents = {"producer": producer(), 0: consumer(0), 1: consumer(1)}
    waits = {name: None for name in agents}
    steps = 0
    while agents:
        runnable = [name for name in agents if waits[name] is None or waits[name][0].passed(waits[name][1])]
        choices = runnable + (["tma"] if tma_in_flight else [])
        assert choices, f"hang: {[(name, waits[name][1], waits[name][0].phases) for name in agents]}"
        name = rng.choice(choices)
        if name == "tma":
            barrier, stage, tile = tma_in_flight.pop(rng.randrange(len(tma_in_flight)))
            if stage is not None:
                content[stage] = ("ready", tile)
                holders[stage] = {0, 1}
            barrier.complete_tx()
            continue
        try:
            waits[name] = next(agents[name])
        except StopIteration:
            del agents[name], waits[name]
        steps += 1
    for item, lists in enumerate(pairs):
        for me, keys in enumerate(lists):
            if 2 * item + me < n_q_blocks:
                assert computed[2 * item + me] == list(keys) + [-1 - x for x in range(text_tiles)]
    return steps


def main():
    rng = random.Random(0)
    steps = 0
    for trial in range(3000):
        n_k_blocks = rng.choice([1, 3, 8, 20])
        n_q_blocks = rng.choice([1, 2, 5, 8])
        pairs = []
        for item in range((n_q_blocks + 1) // 2):
            lists = []
            for me in range(2):
                density = rng.choice([0.0, 0.1, 0.5, 1.0]) if 2 * item + me < n_q_blocks else 0.0
                lists.append([j for j in range(n_k_blocks) if rng.random() < density])
            pairs.append(lists)
        steps += run(pairs, rng.choice([0, 0, 1, 2]), rng.choice([2, 3, 6]), n_q_blocks, trial, turns=trial % 2 == 0)
    print("ok", steps)


if __name__ == "__main__":
    main()
