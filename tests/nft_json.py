"""`nft -j list ruleset` output as stored beside the .nft it came from: handles left out
(they count up in a namespace that is reused), one JSON object per line of the list."""

from __future__ import annotations

import json


def without_handles(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [without_handles(v) for v in value]
    return value


def listing_text(listed: str) -> str:
    items = without_handles(json.loads(listed)["nftables"])
    body = ",\n".join(json.dumps(item) for item in items)
    return '{"nftables": [\n' + body + "\n]}\n"
