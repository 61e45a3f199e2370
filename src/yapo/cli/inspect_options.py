"""The options of ``yapo inspect`` whose help needs more than a line, defined once.

Kept apart from the command so that it reads as its signature plus a short body.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

InspectCorpusOption = Annotated[
    list[Path] | None,
    typer.Option(help="Text (one document per line) or JSONL/CSV files; repeatable."),
]
InspectFieldOption = Annotated[
    str | None, typer.Option(help="Column holding the text in table corpora.")
]
InspectCompareOption = Annotated[
    Path | None, typer.Option(help="Another vector to compare feature by feature.")
]
InspectModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model for corpus contexts (default: the vector's)."),
]
InspectCoordinatesOption = Annotated[
    str, typer.Option(help="Dense→SAE projection: signed | nnls | encoder.")
]
InspectSparsityOption = Annotated[
    float, typer.Option(help="L1 weight of the decoder fit, as a fraction of its maximum.")
]
InspectMaxDocumentsOption = Annotated[
    int | None, typer.Option(help="Use only the first N corpus documents.")
]
InspectOutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write inspect.json and features.html here.")
]
