"""`gte-jax embed` (placeholder until the corpus job lands)."""


def add_parser(sub):
    p = sub.add_parser("embed", help="embed a corpus file into Parquet shards (not yet available)")
    p.set_defaults(func=lambda args: print("gte-jax embed is not implemented yet") or 2)
