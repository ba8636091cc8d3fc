"""Reshape raw CMS articles (example for config/examples/rest-raw-reshape)."""


def reshape(entities: list[dict]) -> list[dict]:
    """Keep id, title and a lower-cased slug; deletions pass through."""
    out = []
    for e in entities:
        if e.get("_deleted"):
            out.append({"_id": e["_id"], "_deleted": True})
            continue
        slug = str(e.get("title", "")).lower().replace(" ", "-")
        out.append({"_id": e["_id"], "title": e.get("title"), "slug": slug})
    return out
