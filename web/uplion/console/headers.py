"""Which headers a response gets: security headers on every response, and caching by kind of file."""

from __future__ import annotations

import re

# Same-origin only: the app's own scripts, styles, images and fonts, and API calls to the same edge
# (/admin/v1, /v1). No inline scripts or eval; inline `style` attributes are not needed either.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

NO_CACHE = "no-cache"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=3600"

# Vite names built files `<name>-<hash>.<ext>` with an 8-character base64url hash
_HASHED = re.compile(r"-[A-Za-z0-9_-]{8,}\.[A-Za-z0-9]+$")


def is_hashed_asset(rel_path: str) -> bool:
    """A file whose name changes with its content (Vite's assets/): safe to cache forever."""
    return rel_path.startswith("assets/") and bool(_HASHED.search(rel_path.rsplit("/", 1)[-1]))


def cache_control(rel_path: str, is_index: bool) -> str:
    """index.html is revalidated every time (it names the current hashed files); hashed files are
    immutable; other files (favicon) are cached for an hour."""
    if is_index or rel_path.endswith(".html"):
        return NO_CACHE
    if is_hashed_asset(rel_path):
        return IMMUTABLE
    return SHORT


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether the client takes gzip (RFC 9110 q-values: `gzip;q=0` refuses it, `*` covers it)."""
    if not accept_encoding:
        return False
    gzip_q: float | None = None
    star_q: float | None = None
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        coding = name.strip().lower()
        if coding in ("gzip", "x-gzip"):
            gzip_q = q
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml", "application/manifest+json")


def compressible(content_type: str) -> bool:
    return content_type.startswith(COMPRESSIBLE)
