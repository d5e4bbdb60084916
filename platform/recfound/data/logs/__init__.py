"""Instruction records built from interaction logs (MovieLens, Amazon Reviews): `recfound data build`.

Readers turn each layout into one columnar event table and one item table (`source`), `split` orders
every user's events by time and holds out the last two (validation, test), and one builder module per
group of tasks writes `<root>/<split>/<TASK>.jsonl` in chunks; `build.build_logs` runs it all inside a
staging folder that replaces the output folder only when everything succeeded.
"""
