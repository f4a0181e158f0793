"""Writes js/src/format.js: the bundle format's tables as ipt_edge/manifest.py defines them, for
the JavaScript runtime. Run it after changing them (tests/test_bundle.py fails until then):

    python js/scripts/write_format.py
"""

import json
from pathlib import Path

from ipt_edge.manifest import format_table

HEADER = """\
// The bundle format's tables (manifest.json), as ipt_edge/manifest.py defines them: written by
// `python js/scripts/write_format.py` from format_table(); tests/test_bundle.py checks they agree.
// Do not edit by hand.
"""

if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "src/format.js"
    path.write_text(
        HEADER + "export default " + json.dumps(format_table(), indent=2) + ";\n", encoding="utf-8"
    )
    print(f"wrote {path}")
