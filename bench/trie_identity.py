"""The trie table against the per-row Python walk it replaced, on a whole test split: same beams, same scores.

    python -m bench.trie_identity --model runs/office/tiny-metadata/align/model --dataset office [--prompts compact]

Decodes every test row (beam 10, direct mode) twice, once with ``train.decoding.TrieLogitsProcessor`` (the
table) and once with ``tests.test_trie_table.ReferenceTrieProcessor`` (the walk of commit 71c0cff), and
prints the rows, the beams, whether every beam and score is identical, and each pass's wall time.
"""
from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.trie_identity", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a saved model folder (with the SID tokens)")
    ap.add_argument("--dataset", default="office")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--sids", default="own")
    ap.add_argument("--prompts", default="compact", help="the prompt set the model was trained with")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args(argv)

    import train.decoding as decoding
    from tests.test_trie_table import ReferenceTrieProcessor
    from train import tasks
    from train.decoding import EMPTY_THINK, constrained_beam_search, encode, token_ids, with_suffix
    from train.model import load_model, set_threads
    from train.trie import SidTrie

    set_threads()
    inputs = tasks.load_inputs(args.dataset, args.data_dir, sids=args.sids, prompts=args.prompts)
    model, tok = load_model(args.model)
    model.eval()
    trie = SidTrie.from_sids(inputs.sids, tok)
    rows = tasks.rec_rows(inputs, "test", tok)
    ids = encode(tok, [with_suffix(r["prompt"], EMPTY_THINK) for r in rows])
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    t = token_ids(tok)
    beams, wall = {}, {}
    table = decoding.TrieLogitsProcessor
    try:
        for name, proc in (("table", table), ("walk", ReferenceTrieProcessor)):
            decoding.TrieLogitsProcessor = proc
            t0 = time.perf_counter()
            out = []
            for s in range(0, len(order), args.batch_size):
                out += constrained_beam_search(model, [ids[i] for i in order[s:s + args.batch_size]], trie,
                                               num_beams=10, num_return=10, end_id=t.end, pad_id=t.pad)
            wall[name], beams[name] = round(time.perf_counter() - t0, 1), out
    finally:
        decoding.TrieLogitsProcessor = table
    print(json.dumps({"rows": len(rows), "beams": sum(len(b) for b in beams["table"]),
                      "identical_beams_and_scores": beams["table"] == beams["walk"], "wall_s": wall}))
    return 0 if beams["table"] == beams["walk"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
