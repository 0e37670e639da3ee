"""uplion's web console server: the built single-page app (web/dist) over HTTP with strict security
headers, client-route fallback to index.html, long caching for hashed assets and gzip."""
