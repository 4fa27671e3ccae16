"""Run the fake model server as a process: ``python bench/fake_model.py --port N`` (see ``bench/fakemodel``)."""

from __future__ import annotations

import sys

from fakemodel import main

if __name__ == "__main__":
    main(sys.argv[1:])
