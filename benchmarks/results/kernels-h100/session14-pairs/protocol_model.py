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

With the flush of a pending P V removed (the `tile == ptile + S` rule) it deadlocks; with the last stage
released early, or the k_read wait removed, an assertion fails: the checks have teeth."""
import random

class Bar:
    def __init__(s, count): s.count, s.pending, s.tx, s.phases = count, count, 0, 0
    def arrive(s, n=1, tx=0):
        s.pending -= n; s.tx += tx; assert s.pending >= 0, "too many arrivals"; s._check()
    def complete_tx(s, n): s.tx -= n; s._check()
    def _check(s):
        if s.pending == 0 and s.tx == 0: s.phases += 1; s.pending = s.count
    def passed(s, parity): return s.phases % 2 != parity

def run(lists, text_tiles, S, seed, n_qb, turns=True):
    rnd = random.Random(seed)
    ready = [Bar(1) for _ in range(S)]; empty = [Bar(2) for _ in range(S)]
    turn = [Bar(1), Bar(1)]; q_ready = Bar(1); q_empty = Bar(2); k_read = Bar(2)
    claim = [None]; codes = [None] * S
    content = [None] * S; holders = [set() for _ in range(S)]; tma = []
    units = len(lists)
    seen = {}
    done_reading = {}
    def producer():
        tile = 0; done = 0
        for unit in range(units):
            a_list, b_list = lists[unit]
            yield (q_empty, (done & 1) ^ 1)
            handed = len(a_list) + len(b_list) + text_tiles
            claim[0] = (unit, handed)
            q_ready.arrive(1, tx=1); tma.append((q_ready, None, None))
            ia = ib = 0
            na = a_list[0] if a_list else None; nb = b_list[0] if b_list else None
            seq = []
            while na is not None or nb is not None:
                kb = min(x for x in (na, nb) if x is not None)
                ina, inb = na == kb, nb == kb
                if ina: ia += 1; na = a_list[ia] if ia < len(a_list) else None
                if inb: ib += 1; nb = b_list[ib] if ib < len(b_list) else None
                ends = na is None and nb is None and text_tiles == 0
                seq.append((kb, ina + 2 * inb + 4 * ends))
            for x in range(text_tiles):
                seq.append((-1 - x, 3 + 4 * (x == text_tiles - 1)))
            for kb, code in seq:
                st = tile % S
                yield (empty[st], ((tile // S) & 1) ^ 1)
                assert not holders[st], f"stage {st} overwritten while held by {holders[st]}"
                codes[st] = (kb, code, tile)
                content[st] = ("loading", tile)
                ready[st].arrive(1, tx=1); tma.append((ready[st], st, tile))
                tile += 1
            done += 1
        yield (q_empty, (done & 1) ^ 1)
        claim[0] = (units, 0)
        q_ready.arrive(1)

    def consumer(c):
        tile = 0; done = 0; iwt = 0
        yield (q_ready, 0)
        unit, count = claim[0]
        while unit < units:
            q_block = 2 * unit + c
            rows_exist = q_block < n_qb
            got = []
            walked = count > 0
            last = 0
            if walked:
                pending = 0; ptile = pstage = 0; stage = 0; at_end = 0
                while not at_end:
                    if pending and tile == ptile + S:
                        assert c in holders[pstage] and content[pstage] == ("ready", ptile)
                        holders[pstage].discard(c); empty[pstage].arrive()
                        pending = 0
                    stage = tile % S
                    yield (ready[stage], (tile // S) & 1)
                    if turns: yield (turn[c], (tile & 1) ^ (1 - c))
                    kb, code, ptile_check = codes[stage]
                    assert ptile_check == tile and content[stage] == ("ready", tile), (c, tile, codes[stage], content[stage])
                    at_end = code & 4
                    if (code >> c) & 1 and rows_exist:
                        pv = pstage if pending else stage
                        assert c in holders[stage] and c in holders[pv]
                        assert content[pv] == ("ready", ptile if pending else tile)
                        if turns: turn[1 - c].arrive()
                        if at_end: q_empty.arrive()
                        got.append(kb)
                        if pending:
                            holders[pstage].discard(c); empty[pstage].arrive()
                        pending = 1; ptile = tile; pstage = stage
                    else:
                        if turns: turn[1 - c].arrive()
                        if at_end: q_empty.arrive()
                        else:
                            holders[stage].discard(c); empty[stage].arrive()
                    tile += 1
                    yield None  # let others interleave
                last = stage
                if pending:
                    assert c in holders[pstage] and content[pstage] == ("ready", ptile)
                    if pstage != stage:
                        holders[pstage].discard(c); empty[pstage].arrive()
                done_reading[(unit, c)] = True
                k_read.arrive()
                iwt += 1
            else:
                q_empty.arrive()
            if rows_exist and walked:
                yield (k_read, (iwt - 1) & 1)
                assert done_reading.get((unit, 1 - c)), f"staging before the other consumer is done, unit {unit}"
                assert c in holders[last] and content[last][0] == "ready"
                yield None
            if walked:
                holders[last].discard(c); empty[last].arrive()
            if rows_exist:
                seen[q_block] = got
            done += 1
            yield (q_ready, done & 1)
            unit, count = claim[0]

    agents = {"p": producer(), 0: consumer(0), 1: consumer(1)}
    waits = {k: None for k in agents}
    steps = 0
    while agents:
        runnable = [k for k in agents if waits[k] is None or waits[k][0].passed(waits[k][1])]
        choices = runnable + (["tma"] if tma else [])
        if not choices:
            raise AssertionError(f"deadlock: waits {[(k, waits[k][1], waits[k][0].phases) for k in agents]}")
        k = rnd.choice(choices)
        if k == "tma":
            bar, st, t = tma.pop(rnd.randrange(len(tma)))
            if st is not None:
                content[st] = ("ready", t); holders[st] = {0, 1}
            bar.complete_tx(1)
            continue
        try:
            waits[k] = next(agents[k])
        except StopIteration:
            del agents[k]; del waits[k]
        steps += 1
    for u, (a, b) in enumerate(lists):
        for c, lst in ((0, a), (1, b)):
            qb = 2 * u + c
            if qb < n_qb:
                expect = list(lst) + [-1 - x for x in range(text_tiles)] if (lst or text_tiles) else []
                if not lst and text_tiles:
                    expect = [-1 - x for x in range(text_tiles)]
                assert seen[qb] == expect, (qb, seen[qb], expect)
    return steps

rnd = random.Random(0)
total = 0
for trial in range(3000):
    nk = rnd.choice([1, 3, 8, 20])
    S = rnd.choice([2, 3, 6])
    n_qb = rnd.choice([1, 2, 5, 8])
    text = rnd.choice([0, 0, 1, 2])
    lists = []
    for u in range((n_qb + 1) // 2):
        pair = []
        for c in range(2):
            if 2 * u + c >= n_qb: pair.append([]); continue
            d = rnd.choice([0.0, 0.1, 0.5, 1.0])
            pair.append(sorted(j for j in range(nk) if rnd.random() < d))
        lists.append(tuple(pair))
    total += run(lists, text, S, trial, n_qb, turns=trial % 2 == 0)
print("ok", total)
