"""`make bench`: performance figures, each a ratio against an ideal or a peer measured in
the same run (the machines are shared and noisy: absolute times drift, ratios hold).

A section is a module with ``run(quick: bool) -> list[dict]`` (rows built with
``bench.common.row``). Register new sections here, nowhere else; each is imported only
when it runs, so a section that needs torch does not slow the others down.
"""
SECTIONS: dict[str, str] = {
    "dedup": "bench.dedup_bench",
    "checks": "bench.checks_bench",
    "engine": "bench.engine_bench",
    "cache": "bench.cache_bench",
    "trainer": "bench.trainer_bench",
}
