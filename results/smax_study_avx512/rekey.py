"""Give the eleventh sitting's records the digests that the AVX-512 type's data have now. Run it once, on that type.

The eleventh sitting's manifests named the shipped behaviour policies `site-packages/inspo/_shipped/smax_policies/
<map>`; every other sitting's, and inspo's since, name them `data/smax_policies/<map>`. The data's bytes are the same,
but their manifest digest, which the run cache compares, is not. For every dataset the study has made again in
`cache/data/smax/`, this script computes the digest its manifest had with the old name and replaces it by the digest
it has now in this folder's records: the runs' `metrics.json`, the searches' `tune.json` and trials' `result.json`, and
the cloning lengths (renamed as `inspo.bc_length.record_path` names them). Records on other data are left as they
are. From the working checkout, once the study's clone has made the data (its `inspo reproduce study --out
results/smax_study_avx512` then stops at the first search); commit, pull into the clone and start the study again:

    python results/smax_study_avx512/rekey.py --data ../studyrun/results/smax_study_avx512/cache/data/smax
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inspo.bc_length import record_path
from inspo.data.format import manifest_digest

STUDY = Path(__file__).resolve().parent
OLD, NEW = '"site-packages/inspo/_shipped/smax_policies/', '"data/smax_policies/'


def digests(data: Path) -> dict[str, str]:
    """The old digest of each dataset in ``data``, mapped to its digest now."""
    renamed = {}
    for file in sorted(data.glob("*/manifest.json")):
        manifest = json.loads(file.read_text())
        old = json.loads(json.dumps(manifest).replace(NEW, OLD))
        if old != manifest:
            renamed[manifest_digest(old)] = manifest["manifest_sha256"]
    return renamed


def rekey(study: Path, renamed: dict[str, str]) -> int:
    """Replace the old digests of ``renamed`` by the new in ``study``'s records; returns how many files changed."""
    changed = 0
    records = [p for pattern in ("runs/**/metrics.json", "tune/**/tune.json", "tune/**/result.json", "bc_length/*.json")
               for p in (study / "cache").glob(pattern)]
    for file in records:
        text = file.read_text()
        new = text
        for old, now in renamed.items():
            new = new.replace(old, now)
        if new == text:
            continue
        target = file
        if file.parent.name == "bc_length":
            target = record_path(file.parent, json.loads(new)["key"])
        target.write_text(new)
        if target != file:
            file.unlink()
        changed += 1
    return changed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=STUDY / "cache" / "data" / "smax",
                        help="the folder of the study's datasets (default: %(default)s)")
    renamed = digests(parser.parse_args().data)
    print(f"{rekey(STUDY, renamed)} records given the current digests of {len(renamed)} datasets")
