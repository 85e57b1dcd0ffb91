"""The usage line every pixquery command shows: `pixquery eval [OPTIONS] DATASET`, as click writes it.

typer >= 0.2x writes a required argument as `{dataset}` (its own notation); on older typer it is
already `DATASET`. Commands with arguments use `cls=Command`.
"""

from __future__ import annotations

import re

import typer.core


class Command(typer.core.TyperCommand):
    def collect_usage_pieces(self, ctx):
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]
