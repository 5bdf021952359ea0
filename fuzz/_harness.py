"""What the fuzz/ harnesses share: the `--random N` run without atheris, and main()."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable


def random_run(test_one_input: Callable[[bytes], None], seeds: list[bytes], n: int, *,
               max_random_len: int, max_mutations: int) -> None:
    """Feed test_one_input n inputs: 30% random bytes shorter than max_random_len, the rest a
    seed with 1 to max_mutations bytes replaced."""
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    for _ in range(n):
        if rng.random() < 0.3:
            data = rng.randbytes(rng.randrange(max_random_len))
        else:
            buf = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, max_mutations + 1)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
            data = bytes(buf)
        test_one_input(data)


def main(test_one_input: Callable[[bytes], None], seed_corpus: Callable[[], list[bytes]], *,
         max_random_len: int, max_mutations: int) -> None:
    """`--random N`: random_run without atheris; otherwise atheris with the libFuzzer options."""
    if len(sys.argv) == 3 and sys.argv[1] == "--random":
        random_run(test_one_input, seed_corpus(), int(sys.argv[2]),
                   max_random_len=max_random_len, max_mutations=max_mutations)
        print(f"{sys.argv[2]} inputs: no crash")
        return
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
